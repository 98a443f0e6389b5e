"""Routing: which experts each token goes to. Top-k (Shazeer et al. 2017; Mixtral), expert capacity and dropped
assignments (GShard, arXiv:2006.16668, Algorithm 1; Switch Transformer, arXiv:2101.03961, Sec. 2.2), and the
contrast where experts pick tokens instead (expert choice, Zhou et al. 2022, arXiv:2202.09368)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_number


def top_k_routing(router_logits: torch.Tensor, top_k: int, norm_topk_prob: bool = True,
                  bias: torch.Tensor | None = None):
    """Softmax over experts, keep the top_k, optionally renormalize: logits (N, E) -> (weights (N, k), index (N, k)).

    The same as setting the other logits to -inf before the softmax ("KeepTopK") when norm_topk_prob=True.
    bias (E,): added to the probabilities only to *choose* the experts (DeepSeek-V3's balancing bias).
    """
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        raise ValueError(f"router_logits must be a 2-D tensor (tokens, experts), got "
                         f"{getattr(router_logits, 'shape', type(router_logits).__name__)}")
    _check_experts(router_logits.shape[-1], top_k)
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.promote_types(router_logits.dtype, torch.float32))  # (N, E)
    if bias is not None:
        weights, index = biased_top_k_routing(probs, bias.to(probs), top_k, norm_topk_prob)
        return weights.to(router_logits.dtype), index
    weights, index = torch.topk(probs, top_k, dim=-1)  # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), index


def biased_top_k_routing(scores: torch.Tensor, bias: torch.Tensor, top_k: int, norm_topk_prob: bool = True):
    """Pick experts by scores + bias, weight them by the unbiased scores: scores (N, E), bias (E,) -> (N, k), (N, k).

    DeepSeek-V3 (arXiv:2412.19437, Sec. 2.1.2) uses sigmoid scores; the bias only steers *which* experts are
    chosen, never the mixing weights.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D tensor (tokens, experts), got {getattr(scores, 'shape', scores)}")
    if not isinstance(bias, torch.Tensor) or bias.shape != scores.shape[-1:]:
        raise ValueError(f"bias must have shape ({scores.shape[-1]},), got {tuple(getattr(bias, 'shape', ()))}")
    _check_experts(scores.shape[-1], top_k)
    index = torch.topk(scores + bias, top_k, dim=-1).indices  # (N, k)
    weights = scores.gather(1, index)  # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, index


class TopKRouter(nn.Module):
    """Linear gate + top-k: x (N, d_model) -> (router_logits (N, E), weights (N, k), index (N, k)).

    noise_std > 0 adds N(0, noise_std^2) to the logits in training mode (the noisy top-k of Shazeer et al.,
    with a fixed instead of a learned noise scale); the loss terms always see the clean logits.
    `expert_bias` (E,), zero unless a training loop updates it (update_expert_bias), steers the choice only.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, noise_std: float = 0.0, norm_topk_prob: bool = True):
        super().__init__()
        check_int("d_model", d_model)
        _check_experts(n_experts, top_k)
        check_number("noise_std", noise_std, 0)
        self.n_experts, self.top_k, self.noise_std, self.norm_topk_prob = n_experts, top_k, float(noise_std), norm_topk_prob
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))  # (E, d_model), as in transformers
        nn.init.normal_(self.weight, std=d_model ** -0.5)
        self.register_buffer("expert_bias", torch.zeros(n_experts))  # (E,) DeepSeek-V3's balancing bias
        self.generator: torch.Generator | None = None  # set one for reproducible routing noise

    def forward(self, x: torch.Tensor):
        router_logits = F.linear(x, self.weight)  # (N, E)
        noisy = router_logits
        if self.training and self.noise_std > 0:
            noise = torch.randn(router_logits.shape, generator=self.generator, dtype=router_logits.dtype)
            noisy = router_logits + self.noise_std * noise.to(router_logits.device)
        weights, index = top_k_routing(noisy, self.top_k, self.norm_topk_prob, self.expert_bias)
        return router_logits, weights, index


def update_expert_bias(bias: torch.Tensor, top_k_index: torch.Tensor, rate: float = 1e-3) -> torch.Tensor:
    """One balancing step: bias_e - rate * sign(load_e - mean load). bias (E,), index (N, k) -> new bias (E,)."""
    check_number("rate", rate, 0, low_open=True)
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError("top_k_index must be a 2-D tensor (tokens, top_k)")
    load = torch.bincount(top_k_index.reshape(-1), minlength=bias.shape[0]).to(bias.dtype)  # (E,)
    return bias - rate * torch.sign(load - load.mean())


# ---- capacity ---------------------------------------------------------------------------------------

def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert: ceil(capacity_factor * n_tokens * top_k / n_experts) (GShard / Switch)."""
    check_int("n_tokens", n_tokens, 0)
    _check_experts(n_experts, top_k)
    check_number("capacity_factor", capacity_factor, 0, low_open=True)
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def capacity_keep_mask(top_k_index: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Which (token, slot) assignments fit: index (N, k) -> keep (N, k) bool.

    Priority: all first choices before second choices, earlier tokens first (GShard). An assignment over
    capacity is dropped: that expert skips the token, and the residual connection carries it on.
    """
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError(f"top_k_index must be a 2-D tensor (tokens, top_k), got "
                         f"{getattr(top_k_index, 'shape', type(top_k_index).__name__)}")
    check_int("n_experts", n_experts)
    check_int("capacity", capacity, 0)
    n, k = top_k_index.shape
    flat = top_k_index.t().reshape(-1)  # (k*N,) slot-major: every token's first choice, then second...
    one_hot = F.one_hot(flat, n_experts)  # (k*N, E)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1  # (k*N,) place in its expert's queue
    return (position < capacity).view(k, n).t()  # (N, k)


def drop_fraction(top_k_index: torch.Tensor, n_experts: int, capacity_factor: float) -> float:
    """Fraction of (token, slot) assignments dropped at this capacity factor. index (N, k) -> float."""
    n, k = top_k_index.shape
    cap = expert_capacity(n, n_experts, k, capacity_factor)
    return 1.0 - capacity_keep_mask(top_k_index, n_experts, cap).float().mean().item()


# ---- expert choice: experts pick tokens ------------------------------------------------------------------

def expert_choice_routing(router_logits: torch.Tensor, capacity: int):
    """Each expert takes the `capacity` tokens with the highest router probability (Zhou et al. 2022).

    router_logits (N, E) -> (weights (E, C), token_index (E, C)); probabilities are a softmax over experts.
    Every expert is exactly full, but a token may get any number of experts, zero included, and a token's
    experts depend on the other tokens in the batch (later ones too).
    """
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        raise ValueError(f"router_logits must be a 2-D tensor (tokens, experts), got "
                         f"{getattr(router_logits, 'shape', type(router_logits).__name__)}")
    check_int("capacity", capacity, 1, router_logits.shape[0])
    probs = torch.softmax(router_logits.float(), dim=-1)  # (N, E)
    weights, token_index = torch.topk(probs.t(), capacity, dim=-1)  # (E, C)
    return weights, token_index


def experts_per_token(token_index: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """How many experts picked each token under expert choice: token_index (E, C) -> (N,) counts."""
    return torch.bincount(token_index.reshape(-1), minlength=n_tokens)


def _check_experts(n_experts, top_k) -> None:
    check_int("n_experts", n_experts, allowed=">= 1")
    check_int("top_k", top_k, allowed=">= 1")
    if top_k > n_experts:
        raise ValueError(f"top_k must be <= n_experts ({n_experts}), got {top_k}")
