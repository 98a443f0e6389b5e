"""MoE layers: the sparse top-k MoE FFN (Mixtral / Qwen-MoE, with DeepSeekMoE's shared experts) and, as a contrast,
Soft MoE, where every expert sees a weighted average of all tokens (Puigcerver et al. 2023, arXiv:2308.00951).
Names follow transformers (`gate`, `experts`, `shared_experts`, `gate_proj/up_proj/down_proj`)."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_int
from ..norms import SwiGLUMLP
from .routing import TopKRouter, _check_experts, capacity_keep_mask, expert_capacity


class MoE(nn.Module):
    """Sparse MoE FFN: each token goes to its top_k experts, outputs mixed by the router weights.

    x (B, T, d_model) or (N, d_model) -> same shape. After a forward the module keeps
    `last_router_logits` (N, E), `last_top_k_index` (N, k), `last_weights` (N, k) and `last_keep` (N, k) for losses and plots.
    capacity_factor=None: no capacity limit (Mixtral, Qwen-MoE inference). noise_std: see TopKRouter.
    n_shared_experts: DeepSeekMoE's always-on experts (Dai et al. 2024, arXiv:2401.06066), stored as one SwiGLU of
    width n_shared_experts * d_ff that every token uses, added to the routed output.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, capacity_factor: float | None = None,
                 noise_std: float = 0.0, norm_topk_prob: bool = True, n_shared_experts: int = 0):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        _check_experts(n_experts, top_k)
        check_int("n_shared_experts", n_shared_experts, 0)
        if capacity_factor is not None:
            expert_capacity(1, n_experts, top_k, capacity_factor)  # validates capacity_factor
        self.d_model, self.n_experts, self.top_k, self.capacity_factor = d_model, n_experts, top_k, capacity_factor
        self.gate = TopKRouter(d_model, n_experts, top_k, noise_std, norm_topk_prob)
        self.experts = nn.ModuleList(SwiGLUMLP(d_model, d_ff) for _ in range(n_experts))
        self.shared_experts = SwiGLUMLP(d_model, n_shared_experts * d_ff) if n_shared_experts else None
        self.last_router_logits = self.last_top_k_index = self.last_weights = self.last_keep = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}) or (N, {self.d_model}), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        shape = x.shape
        h = x.reshape(-1, self.d_model)  # (N, d_model)
        router_logits, weights, index = self.gate(h)  # (N, E), (N, k), (N, k)
        keep = torch.ones_like(index, dtype=torch.bool)
        if self.capacity_factor is not None:
            cap = expert_capacity(h.shape[0], self.n_experts, self.top_k, self.capacity_factor)
            keep = capacity_keep_mask(index, self.n_experts, cap)
        out = torch.zeros_like(h) if self.shared_experts is None else self.shared_experts(h)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where((index == e) & keep)  # the tokens routed to expert e, and in which slot
            if token.numel() == 0:
                continue
            y = expert(h[token]) * weights[token, slot, None].to(h.dtype)  # (n_e, d_model)
            out = out.index_add(0, token, y)
        self.last_router_logits, self.last_top_k_index, self.last_keep = router_logits, index, keep
        self.last_weights = weights.detach()
        return out.view(shape)

    def expert_weights_3d(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Experts stacked as transformers stores them: gate_up_proj (E, 2*d_ff, d_model), down_proj (E, d_model, d_ff)."""
        gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight], 0) for e in self.experts])
        down = torch.stack([e.down_proj.weight for e in self.experts])
        return gate_up, down


def dense_reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The naive equivalent of MoE.forward (no capacity): run every expert on every token, zero the unchosen."""
    h = x.reshape(-1, moe.d_model)  # (N, d_model)
    _, weights, index = moe.gate(h)
    all_out = torch.stack([e(h) for e in moe.experts], dim=1)  # (N, E, d_model)
    mix = torch.zeros(h.shape[0], moe.n_experts, dtype=h.dtype).scatter_add_(1, index, weights.to(h.dtype))  # (N, E)
    out = (mix.unsqueeze(-1) * all_out).sum(1)  # (N, d_model)
    if moe.shared_experts is not None:
        out = out + moe.shared_experts(h)
    return out.view(x.shape)


class SoftMoE(nn.Module):
    """Soft MoE (Puigcerver et al. 2023): each expert processes `slots_per_expert` slots, each slot a softmax-weighted
    average of *all* tokens of the sequence; each token's output is a softmax-weighted average of all slot outputs.

    x (B, T, d_model) -> (B, T, d_model). No token is dropped and everything is differentiable, but a token's output
    depends on every other token of the sequence, later ones included: it cannot be used as-is in a causal decoder.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, slots_per_expert: int = 1):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        check_int("n_experts", n_experts)
        check_int("slots_per_expert", slots_per_expert)
        self.n_experts, self.slots_per_expert = n_experts, slots_per_expert
        self.slot_embeddings = nn.Parameter(torch.randn(d_model, n_experts * slots_per_expert) * d_model ** -0.5)  # phi
        self.experts = nn.ModuleList(SwiGLUMLP(d_model, d_ff) for _ in range(n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"x must have shape (B, T, d_model), got {tuple(getattr(x, 'shape', ()))}")
        logits = x @ self.slot_embeddings  # (B, T, E*S)
        dispatch = logits.softmax(dim=1)  # (B, T, E*S): each slot's weights over the tokens
        combine = logits.softmax(dim=2)  # (B, T, E*S): each token's weights over the slots
        slots = dispatch.transpose(1, 2) @ x  # (B, E*S, d_model)
        per_expert = slots.split(self.slots_per_expert, dim=1)  # E chunks of (B, S, d_model)
        slot_out = torch.cat([f(s) for f, s in zip(self.experts, per_expert)], dim=1)  # (B, E*S, d_model)
        return combine @ slot_out  # (B, T, d_model)
