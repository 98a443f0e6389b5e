"""The GRPO loss, piece by piece: group advantages, the clipped surrogate, the k3 KL, how per-token losses are
aggregated (grpo / bnpo / dapo / dr_grpo), the per-token gradient weight that shows the length bias, and DAPO's
batch-shaping pieces (dynamic sampling's group filter, the soft overlong penalty, masking truncated completions).

Shapes: N = prompts x group_size completions, C = completion length (padded), G = group_size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..checks import check_choice, check_int, check_number, check_tensor

TRL_STD_EPS = 1e-4  # trl adds this to the group std before dividing


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = TRL_STD_EPS) -> torch.Tensor:
    """Advantage of each completion relative to its group: (r - mean_g) / (std_g + eps); rewards (N,) -> (N,).

    Groups are `group_size` consecutive entries (prompt 0's completions first). std is the unbiased (N-1) std and
    eps = 1e-4, both as in trl. scale=False only subtracts the mean (Dr. GRPO). All-equal groups give 0, never NaN.
    """
    check_tensor("rewards", rewards, dims=1)
    if not rewards.is_floating_point():
        raise TypeError(f"rewards must be a floating tensor, got dtype {rewards.dtype}")
    check_int("group_size", group_size, 2, allowed="an int >= 2 (a group of one has no baseline)")
    if rewards.numel() == 0:
        raise ValueError("rewards must not be empty (one reward per completion)")
    if rewards.numel() % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of rewards, got {rewards.numel()} rewards")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite (got NaN or inf)")
    check_number("eps", eps, 0)
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    adv = grouped - grouped.mean(dim=1, keepdim=True)  # (N/G, G)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)  # unbiased std, (N/G, 1)
    return adv.reshape(-1)  # (N,)


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float = 0.2, clip_eps_high: float | None = None) -> torch.Tensor:
    """PPO's clipped objective, negated as a loss, per token: -min(ρ·A, clip(ρ, 1-ε, 1+ε_high)·A), ρ = exp(logp - old).

    logps, old_logps (N, C); advantages (N,) or (N, C) -> (N, C).
    """
    ratio = torch.exp(logps - old_logps)  # (N, C)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (N, 1) or (N, C)
    return -torch.min(ratio * adv, clipped * adv)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): exp(r - l) - (r - l) - 1 with l = log π, r = log π_ref; >= 0. (N, C)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def _agg_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int, n_items: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's tokens, then over sequences (GRPO paper; biased towards long wrong answers)."""
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _agg_bnpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int, n_items: torch.Tensor) -> torch.Tensor:
    """Sum over all tokens in the batch / number of tokens in the batch."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _agg_dapo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int, n_items: torch.Tensor) -> torch.Tensor:
    """Sum over tokens / tokens in the whole generation batch (DAPO, Yu et al. 2025; trl's default loss_type).

    Equal to "bnpo" when the batch is one micro-batch; under gradient accumulation "bnpo" divides each micro-batch
    by its own token count, "dapo" every micro-batch by the same `n_items`, so each token weighs the same.
    """
    return (per_token * mask).sum() / n_items.clamp(min=1.0)


def _agg_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int, n_items: torch.Tensor) -> torch.Tensor:
    """Sum over all tokens / (N · max_completion_length): a constant, so no length-dependent weight (Dr. GRPO)."""
    return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)


# How per-token losses (N, C) become one number; one signature (per-token loss, mask, max completion length, tokens
# in the whole generation batch), chosen by loss_type.
LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]] = {
    "grpo": _agg_grpo, "bnpo": _agg_bnpo, "dapo": _agg_dapo, "dr_grpo": _agg_dr_grpo,
}


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, completion_mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04,
              loss_type: str = "grpo", *, max_completion_length: int | None = None, clip_eps_high: float | None = None,
              num_items_in_batch: float | None = None, return_stats: bool = False):
    """The GRPO loss, same value as trl's GRPOTrainer (token-level ratio): aggregate(clipped_surrogate + β·k3_kl).

    logps, old_logps, ref_logps, completion_mask: (N, C); advantages (N,). old_logps None = logps.detach()
    (one optimization step per batch); ref_logps may be None only when beta == 0 (given with beta == 0, the KL
    is reported in the stats but not added to the loss). clip_eps_high: DAPO's
    clip-higher upper range (trl: epsilon_high; None = clip_eps). max_completion_length: the "dr_grpo" constant
    (default C). num_items_in_batch: the "dapo" token count of the whole generation batch (default: this batch's).
    return_stats: also a dict of floats (kl, clip_frac, ...).
    """
    check_tensor("logps", logps, dims=2)
    check_tensor("completion_mask", completion_mask, dims=2)
    check_tensor("advantages", advantages)
    if completion_mask.shape != logps.shape:
        raise ValueError(f"completion_mask must have the shape of logps {tuple(logps.shape)}, got {tuple(completion_mask.shape)}")
    for name, t in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if t is not None:
            check_tensor(name, t)
            if t.shape != logps.shape:
                raise ValueError(f"{name} must have the shape of logps {tuple(logps.shape)}, got {tuple(t.shape)}")
    if advantages.shape not in (logps.shape[:1], logps.shape):
        raise ValueError(f"advantages must be (N,) = ({logps.shape[0]},) or {tuple(logps.shape)}, got {tuple(advantages.shape)}")
    check_number("clip_eps", clip_eps, 0, low_open=True)
    if clip_eps_high is not None:
        check_number("clip_eps_high", clip_eps_high, 0, low_open=True, allowed="None or a number > 0")
    check_number("beta", beta, 0)
    if beta > 0 and ref_logps is None:
        raise ValueError(f"ref_logps is required when beta > 0 (got beta={beta}); pass beta=0.0 to drop the KL term")
    check_choice("loss_type", loss_type, list(LOSS_AGGREGATIONS))
    C = logps.shape[1]
    L = C if max_completion_length is None else max_completion_length
    check_int("max_completion_length", L, C, allowed=f"an int >= the completion length {C}")

    mask = completion_mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    per_token = clipped_surrogate(logps, old, advantages, clip_eps, clip_eps_high)  # (N, C)
    kl = k3_kl(logps, ref_logps) if beta > 0 else None
    if kl is not None:
        per_token = per_token + beta * kl
    n_items = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=per_token.dtype)
    loss = LOSS_AGGREGATIONS[loss_type](per_token, mask, L, n_items)
    if not return_stats:
        return loss
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1.0)
        ratio = torch.exp(logps - old)
        adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        high = clip_eps if clip_eps_high is None else clip_eps_high
        clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        if kl is None and ref_logps is not None:  # beta = 0 with a reference: the KL is measured, not penalized
            kl = k3_kl(logps, ref_logps)
        stats = {"kl": float((kl * mask).sum() / n_tok) if kl is not None else 0.0,
                 "clip_frac": float((clipped.to(mask.dtype) * mask).sum() / n_tok),
                 "ratio_mean": float((ratio * mask).sum() / n_tok)}
    return loss, stats


def token_gradient_weights(lengths: Sequence[int], advantages: Sequence[float], loss_type: str,
                           max_completion_length: int | None = None) -> torch.Tensor:
    """d loss / d logp for every token at ρ = 1, β = 0 (by autograd through grpo_loss): (N, max(lengths)), 0 on padding.

    Shows the length bias: under "grpo" a token of a long completion gets weight -A/(G·|o|), so long wrong answers
    are penalized less per token than short ones; "dr_grpo" gives every token -A/(G·L).
    """
    if len(lengths) != len(advantages) or not lengths or min(lengths) < 1:
        raise ValueError(f"lengths (all >= 1) and advantages must be non-empty and equally long, got {lengths!r}, {advantages!r}")
    C = max(lengths)
    mask = (torch.arange(C)[None, :] < torch.tensor(lengths)[:, None]).double()  # (N, C)
    logps = torch.zeros(len(lengths), C, dtype=torch.float64, requires_grad=True)
    loss = grpo_loss(logps, None, None, torch.tensor(advantages, dtype=torch.float64), mask, beta=0.0,
                     loss_type=loss_type, max_completion_length=max_completion_length)
    (grad,) = torch.autograd.grad(loss, logps)
    return grad


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: True for each group whose rewards are not all equal; (N,) -> (N / G,) bool.

    A group with equal rewards has zero advantage everywhere, so it adds no gradient, only tokens to the average.
    """
    check_tensor("rewards", rewards, dims=1)
    check_int("group_size", group_size, 2, allowed="an int >= 2 (a group of one has no baseline)")
    if rewards.numel() % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of rewards, got {rewards.numel()} rewards")
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    return (grouped != grouped[:, :1]).any(dim=1)


def overlong_penalty(lengths: Sequence[int], max_completion_length: int, buffer: int) -> list[float]:
    """DAPO's soft overlong punishment (Eq. 13): 0 up to L_max - buffer tokens, then falling linearly to -1 at L_max,
    -1 beyond. Same values as trl.rewards.get_soft_overlong_punishment(L_max, buffer); lengths (N,) -> N floats."""
    check_int("max_completion_length", max_completion_length)
    check_int("buffer", buffer, 0, max_completion_length - 1, allowed=f"an int in [0, max_completion_length - 1 = "
              f"{max_completion_length - 1}] (0 = a hard -1 past the limit)")
    start = max_completion_length - buffer
    lengths = lengths.tolist() if isinstance(lengths, torch.Tensor) else list(lengths)
    for i, n in enumerate(lengths):
        check_int(f"lengths[{i}]", n, 0)
    return [0.0 if n <= start else -1.0 if n > max_completion_length else (start - n) / buffer for n in lengths]


def mask_truncated(completion_mask: torch.Tensor, stopped: torch.Tensor) -> torch.Tensor:
    """Zero the loss mask of completions that hit the length limit without a stop token (trl's
    mask_truncated_completions): a cut-off reply is not evidence that its tokens were bad. (N, C), (N,) bool -> (N, C)."""
    check_tensor("completion_mask", completion_mask, dims=2)
    check_tensor("stopped", stopped, dims=1)
    if stopped.shape[0] != completion_mask.shape[0]:
        raise ValueError(f"stopped must have one entry per completion ({completion_mask.shape[0]}), got {stopped.shape[0]}")
    return completion_mask * stopped.to(completion_mask.device, torch.bool).unsqueeze(1).to(completion_mask.dtype)
