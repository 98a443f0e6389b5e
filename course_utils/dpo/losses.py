"""Log-probabilities of completions and the preference losses on them (DPO, cDPO, rDPO, IPO, hinge/SLiC, KTO,
ORPO, SimPO); the losses are pure functions of (B,) log-prob tensors.

Batches hold the chosen completions first, then the rejected ones (as in trl), so `x.chunk(2)` splits them.
"""

from __future__ import annotations

import math

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
    label_smoothing ε > 0 gives conservative DPO (cDPO, Mitchell 2023): (1-ε)·loss(Δ) + ε·loss(-Δ), the expected
    loss when labels are flipped with probability ε. It is biased: even on clean labels its minimum sits at a finite
    margin (σ(βΔ) = 1-ε). robust_dpo_loss (rDPO) instead de-biases the noisy loss into an estimate of the clean one.
    Same values as trl's DPOTrainer loss_type="sigmoid" at ε = 0 (trl 1.16's "sigmoid" has no label smoothing).
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


def _logratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """Checked inputs -> (chosen log-ratio (B,), rejected log-ratio (B,)), log-ratio = log π - log π_ref."""
    _check_logps(("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
                 (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def robust_dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1,
                    label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair robust DPO (rDPO) loss [(1-ε)·ℓ(βΔ) - ε·ℓ(-βΔ)] / (1-2ε), ℓ(x) = -log σ(x); all inputs (B,).

    Δ = (log π_c - log π_ref,c) - (log π_r - log π_ref,r); ε = label_smoothing in [0, 0.5) is the assumed rate at
    which the preference labels were flipped. Unlike cDPO (dpo_loss with label_smoothing), whose loss is the
    expectation under flipped labels and so biased, rDPO's loss is an unbiased estimator of the clean DPO loss: its
    expectation over the label noise equals -log σ(βΔ) on the true labels (it can be negative for a single pair).
    ε = 0 is plain DPO. Returns (losses, chosen_rewards, rejected_rewards), each (B,); reward = β·log-ratio, detached.
    Chowdhury et al. 2024, "Provably Robust DPO" (arXiv:2403.00409); same values as trl's loss_type="robust".
    """
    chosen_logratios, rejected_logratios = _logratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                                      ref_rejected_logps)
    check_number("beta", beta, 0, low_open=True, finite=True)
    check_number("label_smoothing", label_smoothing, 0, 0.5, high_open=True)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)) \
        / (1 - 2 * label_smoothing)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Per-pair IPO loss (Δ - 1/(2β))², Δ = (log π_c - log π_ref,c) - (log π_r - log π_ref,r); inputs (B,) -> (B,).

    The inputs must already be length-normalized: per-token average log-probs (sum over completion tokens / count),
    as trl's loss_type="ipo" does (the paper writes sequence log-probs; trl notes the IPO authors confirmed the
    normalized form). IPO regresses the log-ratio margin onto 1/(2β) instead of pushing it to infinity as DPO does
    when the data are deterministic. Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences" (arXiv:2310.12036), Eq. 17 (β is their τ).
    """
    chosen_logratios, rejected_logratios = _logratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                                      ref_rejected_logps)
    check_number("beta", beta, 0, low_open=True, finite=True)
    return (chosen_logratios - rejected_logratios - 1 / (2 * beta)) ** 2  # (B,)


def hinge_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
               ref_rejected_logps: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair hinge loss max(0, 1 - βΔ), Δ = (log π_c - log π_ref,c) - (log π_r - log π_ref,r); all inputs (B,).

    Zero once the margin βΔ reaches 1 (1/β is SLiC's margin δ). Returns (losses, chosen_rewards, rejected_rewards),
    each (B,); reward = β·log-ratio, detached. SLiC-HF: Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration
    with Human Feedback" (arXiv:2305.10425), here with reference log-ratios as in trl's loss_type="hinge".
    """
    chosen_logratios, rejected_logratios = _logratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                                      ref_rejected_logps)
    check_number("beta", beta, 0, low_open=True, finite=True)
    losses = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))  # (B,)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, kl, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example KTO loss on unpaired completions: policy_logps, ref_logps (N,), desirable bool (N,), kl scalar.

    r = log π - log π_ref; z = kl, the reference point (an estimate of KL(π ‖ π_ref) ≥ 0, treated as a constant):
        desirable:   w_d · (1 - σ(β(r - z)))
        undesirable: w_u · (1 - σ(β(z - r)))
    Returns (losses (N,), rewards (N,)) in input order; reward = β·r, detached. trl's KTOTrainer concatenates the
    desirable then the undesirable losses and averages them, which equals losses.mean() here.
    Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization" (arXiv:2402.01306), Eq. 7.
    """
    _check_logps(("policy_logps", "ref_logps"), (policy_logps, ref_logps))
    if not isinstance(desirable, torch.Tensor) or desirable.dtype != torch.bool or desirable.shape != policy_logps.shape:
        raise ValueError(f"desirable must be a bool tensor of shape {tuple(policy_logps.shape)} (True = desirable), got "
                         f"{getattr(desirable, 'dtype', type(desirable).__name__)} "
                         f"{tuple(getattr(desirable, 'shape', ()))}")
    if isinstance(kl, torch.Tensor):
        if kl.numel() != 1:
            raise ValueError(f"kl must be a scalar (one-element tensor or number), got shape {tuple(kl.shape)}")
        kl_value = kl.item()
    else:
        kl_value = kl
    check_number("kl", kl_value, 0, finite=True)
    check_number("beta", beta, 0, low_open=True, finite=True)
    check_number("desirable_weight", desirable_weight, 0, finite=True)
    check_number("undesirable_weight", undesirable_weight, 0, finite=True)
    z = (kl.detach().reshape(()) if isinstance(kl, torch.Tensor) else torch.tensor(kl_value, dtype=torch.float64))
    z = z.to(policy_logps)  # a constant: no gradient flows into the reference point
    logratios = policy_logps - ref_logps  # (N,)
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (logratios - z))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z - logratios))))  # (N,)
    return losses, beta * logratios.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0 without cancellation: log1p(-e^x) below -log 2, log(-expm1(x)) above (Mächler 2012).

    Naive equivalent: torch.log(1 - torch.exp(x)), which loses all digits as x -> 0⁻ and as x -> -inf.
    """
    small = x < -math.log(2)
    # each branch sees only inputs where it is finite, so the unused one cannot put NaN into the gradient
    return torch.where(small, torch.log1p(-torch.exp(torch.where(small, x, -1.0))),
                       torch.log(-torch.expm1(torch.where(small, -1.0, x))))


def orpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor) -> torch.Tensor:
    """Per-pair ORPO odds-ratio loss -log σ(log odds_c - log odds_r), odds = p/(1-p); inputs (B,) -> (B,).

    Inputs are per-token average log-probs log p (< 0), so log odds = log p - log(1 - p) = log p - log1mexp(log p),
    computed stably. No reference model; ORPO adds λ·(this loss) to the NLL of the chosen tokens (trl: λ = beta = 0.1).
    Hong, Lee and Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model" (arXiv:2403.07691),
    Eqs. 4-7; trl's ORPOTrainer.odds_ratio_loss returns λ·log σ(...), i.e. -λ times this.
    """
    _check_logps(("chosen_avg_logps", "rejected_avg_logps"), (chosen_avg_logps, rejected_avg_logps))
    for name, t in (("chosen_avg_logps", chosen_avg_logps), ("rejected_avg_logps", rejected_avg_logps)):
        bad = ~(t <= 0)  # also catches NaN
        if bad.any():
            raise ValueError(f"{name} must be log-probabilities <= 0, got {t[bad][0].item()!r} at index "
                             f"{bad.nonzero()[0].item()}")
    # log p in (-ε/2, 0] (ε = the dtype's machine epsilon; float32 cannot tell such p from 1) is read as -ε/2, so the
    # odds and their gradients stay finite; such entries get no gradient
    chosen_avg_logps, rejected_avg_logps = (t.clamp(max=-torch.finfo(t.dtype).eps / 2)
                                            for t in (chosen_avg_logps, rejected_avg_logps))
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (_log1mexp(chosen_avg_logps) - _log1mexp(rejected_avg_logps))
    return -F.logsigmoid(log_odds)  # (B,)


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss -log σ(β·avg log π_c - β·avg log π_r - γ); inputs are per-token average log-probs (B,).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); reward = β·avg log π, detached. No reference model.
    Meng, Xia and Chen 2024 (arXiv:2405.14734); same values as trl's CPOTrainer loss_type="simpo" (simpo_gamma = γ).
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
