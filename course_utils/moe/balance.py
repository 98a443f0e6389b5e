"""Balancing: the auxiliary losses that keep experts evenly used (Switch Transformer's f·P loss, Shazeer et al.'s
importance CV², ST-MoE's router z-loss, arXiv:2202.08906) and the statistics that measure balance."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..checks import check_int, check_number
from .routing import _check_experts, capacity_keep_mask, expert_capacity, top_k_routing


def _as_layers(router_logits) -> list[torch.Tensor]:
    layers = list(router_logits) if isinstance(router_logits, (tuple, list)) else [router_logits]
    if not layers or not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in layers):
        raise ValueError("router_logits must be a 2-D tensor (tokens, experts) or a tuple/list of them (one per layer)")
    if any(t.shape[0] == 0 for t in layers):
        raise ValueError(f"router_logits must hold at least one token, got shapes {[tuple(t.shape) for t in layers]}")
    return layers


def load_balancing_loss(router_logits, n_experts: int, top_k: int, attention_mask: torch.Tensor | None = None):
    """Switch-style aux loss E * sum_e f_e * P_e, the value transformers' Mixtral/Qwen-MoE `load_balancing_loss_func` gives.

    router_logits: (N, E) or a tuple of per-layer (N, E) tensors (pooled over layers).
    f_e = top-k assignments to expert e per token (sums to top_k); P_e = mean router probability of e.
    Perfect balance gives top_k; total collapse (the same experts for every token) gives n_experts.
    attention_mask (B, T) with B*T == N: padding tokens (0) are left out.
    """
    _check_experts(n_experts, top_k)
    layers = _as_layers(router_logits)
    if any(t.shape[-1] != n_experts for t in layers):
        raise ValueError(f"router_logits last dim must equal n_experts={n_experts}, got {[t.shape[-1] for t in layers]}")
    counts = torch.zeros(n_experts, dtype=torch.float32, device=layers[0].device)
    prob_sum = torch.zeros(n_experts, dtype=torch.float32, device=layers[0].device)
    rows = 0.0
    for logits in layers:
        w = torch.ones(logits.shape[0], device=logits.device)
        if attention_mask is not None:
            if attention_mask.numel() != logits.shape[0]:
                raise ValueError(f"attention_mask must have {logits.shape[0]} elements (one per token), "
                                 f"got {attention_mask.numel()}")
            w = attention_mask.reshape(-1).float().to(logits.device)  # (N,)
        probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
        index = probs.topk(top_k, dim=-1).indices  # (N, k)
        counts = counts + (F.one_hot(index, n_experts).float() * w[:, None, None]).sum((0, 1))  # (E,)
        prob_sum = prob_sum + (probs * w[:, None]).sum(0)  # (E,)
        rows = rows + w.sum()
    return n_experts * torch.sum((counts / rows) * (prob_sum / rows))


def importance_cv_loss(router_logits) -> torch.Tensor:
    """Shazeer et al.'s importance loss: CV(importance)^2, importance_e = sum over tokens of router prob of e."""
    layers = _as_layers(router_logits)
    importance = torch.softmax(torch.cat(layers).float(), dim=-1).sum(0)  # (E,)
    return importance.var(unbiased=False) / importance.mean() ** 2


def router_z_loss(router_logits) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2 (keeps router logits small)."""
    return torch.logsumexp(torch.cat(_as_layers(router_logits)).float(), dim=-1).pow(2).mean()


def expert_share(top_k_index: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction of (token, slot) assignments each expert received: index (N, k) -> (E,) summing to 1."""
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError("top_k_index must be a 2-D tensor (tokens, top_k)")
    check_int("n_experts", n_experts)
    counts = torch.bincount(top_k_index.reshape(-1), minlength=n_experts).float()
    return counts / counts.sum()


def coefficient_of_variation(x: torch.Tensor) -> float:
    """std / mean (population std) of a 1-D tensor; 0 means perfectly even."""
    return (x.float().std(unbiased=False) / x.float().mean()).item()


@functools.lru_cache(maxsize=64)
def _trained_router(aux_loss_coef: float, top_k: int, n_experts: int, n_tokens: int, skew: float, steps: int, lr: float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """router_tradeoff's toy data and trained router: (quality (N, E), router logits (N, E)), kept for the next call
    with the same settings (the explorer's capacity slider, or a control moved back, need not train again)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, 16, generator=gen)  # (N, 16) token features
    quality = x @ torch.randn(16, n_experts, generator=gen) / 4 + skew * F.one_hot(torch.tensor(0), n_experts)  # (N, E)
    x = torch.cat([x, torch.ones(n_tokens, 1)], -1)  # (N, 17): a constant feature lets the router prefer an expert
    w = torch.zeros(17, n_experts, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    for _ in range(steps):
        logits = x @ w  # (N, E)
        objective = (logits.softmax(-1) * quality).sum(-1).mean()
        loss = -objective + aux_loss_coef * load_balancing_loss(logits, n_experts, top_k)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return quality, x @ w


def router_tradeoff(aux_loss_coef: float, *, top_k: int = 2, capacity_factor: float = 1.25, n_experts: int = 8,
                    n_tokens: int = 512, skew: float = 2.0, steps: int = 100, lr: float = 0.5, seed: int = 0) -> dict:
    """A router trained on a toy objective, for the MoE explorer: follow expert quality, or balance the load.

    Each token has a quality score per expert (random, plus `skew` for expert 0, which is better on average). A
    linear router on random token features is trained for `steps` of gradient descent to maximize the expected
    quality sum_e p_e q_e minus aux_loss_coef * load_balancing_loss. Returns {"share" (E,), "capacity" (slots per
    expert), "dropped" (fraction of assignments over capacity), "aux" (f·P loss), "quality" (mean quality of the
    kept assignments, relative to always taking each token's best experts)}.
    """
    check_number("aux_loss_coef", aux_loss_coef, 0)
    check_number("capacity_factor", capacity_factor, 0, low_open=True)
    check_int("n_tokens", n_tokens)
    _check_experts(n_experts, top_k)
    quality, logits = _trained_router(float(aux_loss_coef), top_k, n_experts, n_tokens, skew, steps, lr, seed)
    with torch.no_grad():
        _, index = top_k_routing(logits, top_k)  # (N, k)
        cap = expert_capacity(n_tokens, n_experts, top_k, capacity_factor)
        keep = capacity_keep_mask(index, n_experts, cap)  # (N, k)
        best = quality.topk(top_k, -1).values.sum()
        kept_quality = (quality.gather(1, index) * keep).sum()
    return {"share": expert_share(index, n_experts), "capacity": cap, "dropped": 1 - keep.float().mean().item(),
            "aux": load_balancing_loss(logits, n_experts, top_k).item(), "quality": (kept_quality / best).item(),
            "index": index, "keep": keep}
