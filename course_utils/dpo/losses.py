"""Log-probabilities of completions and the preference losses (DPO, SimPO) on them; the losses are pure functions.

Batches hold the chosen completions first, then the rejected ones (as in trl), so `x.chunk(2)` splits them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_number


# ---- log-probabilities ----------------------------------------------------------------------------

def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1: logits (B, T, V), input_ids (B, T) -> (B, T-1), in float32.

    Naive equivalent: torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    target = input_ids[:, 1:]  # (B, T-1)
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _check_batch(input_ids, attention_mask, loss_mask) -> None:
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask), ("loss_mask", loss_mask)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (B, T), got {getattr(t, 'shape', type(t).__name__)}")
    if not (input_ids.shape == attention_mask.shape == loss_mask.shape):
        raise ValueError(f"input_ids, attention_mask and loss_mask must have the same shape (B, T), got "
                         f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(loss_mask.shape)}")
    lm = loss_mask.bool()
    empty = (~lm[:, 1:]).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"loss_mask marks no completion token (after position 0) in rows {empty}: "
                         f"every sequence needs a non-empty completion")
    if lm[:, 0].any():
        raise ValueError("loss_mask[:, 0] must be False: the first token has no context to be predicted from")
    if (lm & ~attention_mask.bool()).any():
        raise ValueError("loss_mask marks padding (attention_mask == 0) as completion tokens")


def _forward_token_logps(model, input_ids, attention_mask, loss_mask, *, return_logits: bool = False):
    """Completion-token log-probs (B, T-1) (0 elsewhere) and the shifted mask (B, T-1); logits too if asked."""
    _check_batch(input_ids, attention_mask, loss_mask)
    dev = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    mask = loss_mask.to(dev).bool()[:, 1:]  # (B, T-1): token t+1 is scored at position t
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T): positions restart after left padding
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits  # (B, T, V)
    logps = torch.where(mask, token_logprobs(logits, input_ids), 0.0)  # where, not *: padded rows may hold NaN
    return (logps, mask, logits) if return_logits else (logps, mask)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                      average: bool = False) -> torch.Tensor:
    """Sum (or mean, average=True) of log p(token) over the completion tokens: each (B, T) -> (B,).

    loss_mask is True on completion tokens (never position 0); works with left or right padding.
    """
    logps, mask = _forward_token_logps(model, input_ids, attention_mask, loss_mask)
    total = logps.sum(dim=1)  # (B,)
    return total / mask.sum(dim=1) if average else total


# ---- losses ----------------------------------------------------------------------------------------

def _check_logps(names: tuple[str, ...], tensors: tuple) -> None:
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor (B,), got {getattr(t, 'shape', type(t).__name__)}")
    shapes = {name: tuple(t.shape) for name, t in zip(names, tensors)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"batch sizes must match, got {shapes}")
    if tensors[0].numel() == 0:
        raise ValueError("log-prob tensors are empty (B = 0)")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1, *,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss -log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)]); all inputs (B,).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); reward = β·(log π - log π_ref), detached.
    label_smoothing ε > 0 gives conservative DPO: (1-ε)·loss(Δ) + ε·loss(-Δ) (labels flipped with probability ε).
    """
    _check_logps(("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
                 (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))
    check_number("beta", beta, 0, low_open=True, finite=True)
    check_number("label_smoothing", label_smoothing, 0, 0.5, high_open=True)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss -log σ(β·avg log π_c - β·avg log π_r - γ); inputs are per-token average log-probs (B,).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); reward = β·avg log π, detached. No reference model.
    """
    _check_logps(("chosen_avg_logps", "rejected_avg_logps"), (chosen_avg_logps, rejected_avg_logps))
    check_number("beta", beta, 0, low_open=True, finite=True)
    check_number("gamma", gamma, 0, finite=True)
    chosen_rewards, rejected_rewards = beta * chosen_avg_logps, beta * rejected_avg_logps  # (B,)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of KL(π ‖ π_ref) = Σ_v π log(π/π_ref): logits (B, T, V), mask (B, T) -> scalar."""
    if policy_logits.shape != ref_logits.shape or policy_logits.shape[:2] != mask.shape:
        raise ValueError(f"policy_logits, ref_logits must be (B, T, V) and mask (B, T); got {tuple(policy_logits.shape)}, "
                         f"{tuple(ref_logits.shape)}, {tuple(mask.shape)}")
    logp = torch.log_softmax(policy_logits.float(), -1)  # (B, T, V)
    logq = torch.log_softmax(ref_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (B, T)
    return kl[mask.bool()].mean()
