"""PPO's and RLOO's pieces as pure functions on tensors (N sequences, C completion tokens, mask 1 = real token).

    rewards = kl_penalized_rewards(scores, logps, ref_logps, mask, kl_coef)    # (N, C) InstructGPT's per-token reward
    adv, ret = gae(rewards, values * mask, gamma=1.0, lam=0.95)                  # (N, C) each
    loss = policy_loss(logps, old_logps, whiten(adv, mask), mask) + vf_coef * value_loss(v, old_v, ret, mask)

    adv = rloo_advantages(seq_rewards, group_size)                               # (N,) critic-free
    loss = rloo_loss(seq_logps, old_seq_logps, adv)                              # as trl's RLOOTrainer
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_number, check_tensor


def _same_shape(**tensors) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{', '.join(shapes)} must have the same shape, got {shapes}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (all dims): a scalar."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the real tokens (unbiased var, + 1e-8), zero on padding: (N, C)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def kl_penalized_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float) -> torch.Tensor:
    """Per-token rewards (N, C): -kl_coef·(log π - log π_ref) at every token, plus the reward model's score (N,) at
    the last real token of each row (InstructGPT; trl's old PPOTrainer). Summed over a row: score - kl_coef·KL_k1."""
    check_tensor("scores", scores, dims=1, floating=True)
    _same_shape(logps=logps, ref_logps=ref_logps, mask=mask)
    check_number("kl_coef", kl_coef, 0)
    rewards = -kl_coef * (logps - ref_logps) * mask  # (N, C)
    last = (mask.long().cumsum(1).argmax(1))  # (N,) index of the last real token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95):
    """Generalized advantage estimation (Schulman et al. 2016): (advantages, returns), each (N, C).

    δ_t = r_t + γ V_{t+1} - V_t,  A_t = δ_t + γλ A_{t+1}, with V and A = 0 after the last token; returns = A + V.
    Right padding: pass rewards and values zeroed on padding, and the last real token then bootstraps from 0.
    """
    check_tensor("rewards", rewards, dims=2, floating=True)
    _same_shape(rewards=rewards, values=values)
    check_number("gamma", gamma, 0, 1)
    check_number("lam", lam, 0, 1)
    C = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (N,)
    next_adv = torch.zeros_like(rewards[:, 0])  # (N,)
    for t in reversed(range(C)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, advantages + values


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2, return_stats: bool = False):
    """PPO's clipped surrogate, per token, averaged over the real tokens of the batch: scalar.

    -min(ρ·A, clip(ρ, 1-ε, 1+ε)·A), ρ = exp(log π - log π_old); logps, old_logps, advantages, mask (N, C).
    """
    _same_shape(logps=logps, old_logps=old_logps, advantages=advantages, mask=mask)
    check_number("clip_eps", clip_eps, 0, low_open=True)
    ratio = torch.exp(logps - old_logps)  # (N, C)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    if not return_stats:
        return loss
    return loss, {"clip_frac": float(masked_mean((clipped > unclipped).float(), mask))}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_value: float | None = 0.2) -> torch.Tensor:
    """The critic's clipped squared error: 0.5·mean over real tokens of max((V-R)², (V_clip-R)²), scalar.

    V_clip = old_V + clip(V - old_V, -c, c): the value may not move more than c from the one used for the advantages.
    """
    _same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    err = (values - returns) ** 2  # (N, C)
    if clip_value is not None:
        check_number("clip_value", clip_value, 0, low_open=True)
        clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): each reward minus the mean of the other samples of its prompt.

    rewards (N,) with the group_size samples of a prompt on consecutive rows -> (N,).
    Equal to G/(G-1) · (r - group mean).
    """
    check_tensor("rewards", rewards, dims=1, floating=True)
    if not len(rewards) or not torch.isfinite(rewards).all():
        raise ValueError(f"rewards must be a non-empty tensor of finite numbers, got {rewards.tolist()[:8]}")
    check_int("group_size", group_size, 2, allowed="an int >= 2 (one other sample at least)")
    if len(rewards) % group_size:
        raise ValueError(f"len(rewards) = {len(rewards)} must be a multiple of group_size = {group_size}")
    grouped = rewards.view(-1, group_size)  # (P, G)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # (P, G)
    return (grouped - baseline).view(-1)


def rloo_loss(seq_logps: torch.Tensor, old_seq_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float = 0.2,
              return_stats: bool = False):
    """RLOO's loss as trl's RLOOTrainer takes it: one clipped ratio per sequence, mean over sequences: scalar.

    seq_logps, old_seq_logps, advantages (N,): log π of the whole completion (sum over its tokens).
    """
    _same_shape(seq_logps=seq_logps, old_seq_logps=old_seq_logps, advantages=advantages)
    check_number("clip_eps", clip_eps, 0, low_open=True)
    ratio = torch.exp(seq_logps - old_seq_logps)  # (N,)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = torch.maximum(unclipped, clipped).mean()
    if not return_stats:
        return loss
    return loss, {"clip_frac": float((clipped > unclipped).float().mean())}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the real tokens: 1 = the critic predicts the returns, 0 = no better than their mean."""
    mean_r = masked_mean(returns, mask)
    var_r = masked_mean((returns - mean_r) ** 2, mask)
    resid = returns - values
    var_res = masked_mean((resid - masked_mean(resid, mask)) ** 2, mask)
    return float(1 - var_res / var_r.clamp(min=1e-12))
