"""Preference training with train.train: the loss function for each preference method (with its metrics), the
frozen reference model and what keeping it costs.

Each method in PREFERENCE_METHODS only gathers log-probs from the batch (chosen rows first, then rejected) and calls
its pure loss from .losses; NEEDS_REFERENCE says which ones score against a frozen reference model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from ..checks import check_choice, check_number
from .losses import (_forward_token_logps, dpo_loss, hinge_loss, ipo_loss, kto_loss, orpo_loss, robust_dpo_loss,
                     simpo_loss, token_kl)


@dataclass
class PreferenceConfig:
    """Which preference loss and its knobs (the optimizer and schedule live in train.TrainConfig)."""

    method: str = "dpo"  # a PREFERENCE_METHODS key: dpo, robust, ipo, hinge, kto (need a reference) | simpo, orpo
    beta: float = 0.1  # dpo/robust/hinge/kto: KL leash strength; ipo: target margin 1/(2β); simpo: reward scale
    #                    (the paper uses 2-2.5); orpo: λ, the weight of the odds-ratio term (trl's default 0.1)
    gamma: float = 1.0  # SimPO target margin in reward units (ignored by the others)
    label_smoothing: float = 0.0  # dpo: conservative-DPO label noise; robust: rDPO's assumed flip rate (others ignore it)
    sft_weight: float = 0.0  # + w * mean NLL of the chosen tokens (RPO; trl loss_type=["sigmoid", "sft"]); not orpo
    desirable_weight: float = 1.0  # kto: weight of the desirable (chosen) examples' losses
    undesirable_weight: float = 1.0  # kto: weight of the undesirable (rejected) examples' losses


def _policy_and_ref(model, ref_model, batch):
    """Completion-token log-probs (2B, T-1) of policy and reference, the mask, and the token KL (a float)."""
    logps, mask, logits = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                               return_logits=True)
    with torch.no_grad():
        ref_logps, _, ref_logits = _forward_token_logps(ref_model, batch["input_ids"], batch["attention_mask"],
                                                        batch["loss_mask"], return_logits=True)
    kl = token_kl(logits[:, :-1].detach(), ref_logits[:, :-1], mask).item()
    return logps, ref_logps, mask, kl


def _chosen_nll(logps, mask) -> torch.Tensor:
    """Mean -log p over every chosen token of the batch (the first half of the rows): a scalar."""
    B = logps.shape[0] // 2
    return -logps[:B][mask[:B]].mean()


def _plus_sft(loss, logps, mask, cfg: PreferenceConfig) -> torch.Tensor:
    """loss + cfg.sft_weight · chosen NLL: keeps the chosen replies likely (pure DPO can lower them with the rejected)."""
    return loss + cfg.sft_weight * _chosen_nll(logps, mask) if cfg.sft_weight else loss


def _dpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    """DPO (cDPO with cfg.label_smoothing) on summed log-probs; reward = β·log-ratio."""
    logps, ref_logps, mask, kl = _policy_and_ref(model, ref_model, batch)
    pc, pr = logps.sum(1).chunk(2)  # (B,) each: chosen rows first
    rc, rr = ref_logps.sum(1).chunk(2)
    losses, r_c, r_r = dpo_loss(pc, pr, rc, rr, cfg.beta, label_smoothing=cfg.label_smoothing)
    return _plus_sft(losses.mean(), logps, mask, cfg), _metrics(r_c, r_r, pc, pr) | {"kl": kl}


def _robust_step(model, ref_model, batch, cfg: PreferenceConfig):
    """rDPO with flip rate cfg.label_smoothing on summed log-probs; reward = β·log-ratio."""
    logps, ref_logps, mask, kl = _policy_and_ref(model, ref_model, batch)
    pc, pr = logps.sum(1).chunk(2)
    rc, rr = ref_logps.sum(1).chunk(2)
    losses, r_c, r_r = robust_dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
    return _plus_sft(losses.mean(), logps, mask, cfg), _metrics(r_c, r_r, pc, pr) | {"kl": kl}


def _hinge_step(model, ref_model, batch, cfg: PreferenceConfig):
    """Hinge (SLiC) on summed log-probs; reward = β·log-ratio."""
    logps, ref_logps, mask, kl = _policy_and_ref(model, ref_model, batch)
    pc, pr = logps.sum(1).chunk(2)
    rc, rr = ref_logps.sum(1).chunk(2)
    losses, r_c, r_r = hinge_loss(pc, pr, rc, rr, cfg.beta)
    return _plus_sft(losses.mean(), logps, mask, cfg), _metrics(r_c, r_r, pc, pr) | {"kl": kl}


def _ipo_step(model, ref_model, batch, cfg: PreferenceConfig):
    """IPO on per-token average log-probs (as trl); reward = average log-ratio (no β), so the margin's target is
    1/(2β)."""
    logps, ref_logps, mask, kl = _policy_and_ref(model, ref_model, batch)
    n = mask.sum(1)  # (2B,) completion tokens per row
    ac, ar = (logps.sum(1) / n).chunk(2)  # (B,) each
    rc, rr = (ref_logps.sum(1) / n).chunk(2)
    losses = ipo_loss(ac, ar, rc, rr, cfg.beta)
    pc, pr = logps.sum(1).chunk(2)
    metrics = _metrics((ac - rc).detach(), (ar - rr).detach(), pc, pr) | {"kl": kl}
    return _plus_sft(losses.mean(), logps, mask, cfg), metrics


def _kto_step(model, ref_model, batch, cfg: PreferenceConfig):
    """KTO with each pair split into one desirable (chosen) and one undesirable (rejected) example.

    The reference point z is the batch mean of log π - log π_ref over all 2B completions, detached and clamped at 0.
    The KTO paper and trl estimate z on mismatched prompt-completion pairs (x_i, y_j), so that it tracks
    KL(π ‖ π_ref) rather than the rewards of this batch; this simpler in-batch estimate needs no extra forward pass.
    reward = β·log-ratio; "acc" is the fraction of pairs whose chosen reward beats the rejected one (as DPO's).
    """
    logps, ref_logps, mask, kl = _policy_and_ref(model, ref_model, batch)
    seq, ref_seq = logps.sum(1), ref_logps.sum(1)  # (2B,)
    B = seq.shape[0] // 2
    z = (seq - ref_seq).detach().mean().clamp_min(0)  # scalar reference point
    desirable = torch.arange(2 * B, device=seq.device) < B  # (2B,): chosen rows first
    losses, rewards = kto_loss(seq, ref_seq, desirable, z, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
    pc, pr = seq.chunk(2)
    metrics = _metrics(*rewards.chunk(2), pc, pr) | {"kl": kl, "z": z.item()}
    return _plus_sft(losses.mean(), logps, mask, cfg), metrics


def _simpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    """SimPO on per-token average log-probs; reward = β·average log-prob."""
    logps, mask = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    avg = logps.sum(1) / mask.sum(1)  # (2B,) per-token average
    ac, ar = avg.chunk(2)
    losses, r_c, r_r = simpo_loss(ac, ar, cfg.beta, cfg.gamma)
    pc, pr = logps.sum(1).chunk(2)
    return _plus_sft(losses.mean(), logps, mask, cfg), _metrics(r_c, r_r, pc, pr)


def _orpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    """ORPO: mean NLL of the chosen tokens + β·mean odds-ratio loss on per-token average log-probs (no reference).

    reward = β·average log-prob (as trl); a pair is "acc" when the chosen completion has the larger average log-prob,
    which is the same as log odds_c > log odds_r (the odds p/(1-p) grow with p).
    """
    logps, mask = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    avg = logps.sum(1) / mask.sum(1)  # (2B,) per-token average
    ac, ar = avg.chunk(2)
    nll = _chosen_nll(logps, mask)
    ratio_losses = orpo_loss(ac, ar)  # (B,)
    pc, pr = logps.sum(1).chunk(2)
    metrics = _metrics(cfg.beta * ac.detach(), cfg.beta * ar.detach(), pc, pr)
    return nll + cfg.beta * ratio_losses.mean(), metrics | {"nll": nll.item(), "or_loss": ratio_losses.mean().item()}


def _metrics(r_c, r_r, pc, pr) -> dict[str, float]:
    return {"acc": (r_c > r_r).float().mean().item(), "margin": (r_c - r_r).mean().item(),
            "logp_chosen": pc.detach().mean().item(), "logp_rejected": pr.detach().mean().item()}


# Each method: (policy, reference or None, batch, PreferenceConfig) -> (mean loss, metrics dict).
PREFERENCE_METHODS: dict[str, Callable] = {"dpo": _dpo_step, "robust": _robust_step, "ipo": _ipo_step,
                                           "hinge": _hinge_step, "kto": _kto_step, "simpo": _simpo_step,
                                           "orpo": _orpo_step}
# The methods that score the policy against a frozen reference model (make_loss_fn needs ref_model for these).
NEEDS_REFERENCE: frozenset[str] = frozenset({"dpo", "robust", "ipo", "hinge", "kto"})


def needs_reference(method: str) -> bool:
    """True when `method` (a PREFERENCE_METHODS key) needs a frozen reference model: needs_reference("orpo") -> False."""
    check_choice("method", method, list(PREFERENCE_METHODS))
    return method in NEEDS_REFERENCE


def make_loss_fn(cfg: PreferenceConfig, ref_model=None) -> Callable:
    """A `loss_fn(model, batch) -> (loss, metrics)` for train.train; methods in NEEDS_REFERENCE need `ref_model`."""
    if not isinstance(cfg, PreferenceConfig):
        raise TypeError(f"cfg must be a PreferenceConfig, got {type(cfg).__name__}")
    check_choice("cfg.method", cfg.method, list(PREFERENCE_METHODS))
    check_number("cfg.beta", cfg.beta, 0, low_open=True, finite=True)
    check_number("cfg.sft_weight", cfg.sft_weight, 0)
    check_number("cfg.label_smoothing", cfg.label_smoothing, 0, 0.5, high_open=True)
    check_number("cfg.desirable_weight", cfg.desirable_weight, 0, finite=True)
    check_number("cfg.undesirable_weight", cfg.undesirable_weight, 0, finite=True)
    if cfg.method == "orpo" and cfg.sft_weight:
        raise ValueError(f"cfg.sft_weight must be 0 for method 'orpo' (its loss already holds the chosen NLL), "
                         f"got {cfg.sft_weight!r}")
    if cfg.method in NEEDS_REFERENCE and ref_model is None:
        raise ValueError(f"method {cfg.method!r} needs ref_model (a frozen copy of the starting policy); "
                         f"use frozen_copy(model), or a reference-free method "
                         f"({', '.join(m for m in PREFERENCE_METHODS if m not in NEEDS_REFERENCE)})")
    step = PREFERENCE_METHODS[cfg.method]
    return lambda model, batch: step(model, ref_model, batch, cfg)


def frozen_copy(model):
    """A deep copy of `model` in eval mode with requires_grad=False: the reference policy of DPO, IPO, KTO, ..."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def model_bytes(model) -> int:
    """Bytes held by a model's parameters and buffers (what keeping a reference model costs)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
