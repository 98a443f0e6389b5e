"""Preference training with train.train: the loss function for DPO or SimPO (with its metrics), the frozen
reference model and what keeping it costs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from ..checks import check_choice, check_number
from .losses import _forward_token_logps, dpo_loss, simpo_loss, token_kl


@dataclass
class PreferenceConfig:
    """Which preference loss and its knobs (the optimizer and schedule live in train.TrainConfig)."""

    method: str = "dpo"  # "dpo" (needs a frozen reference model) | "simpo" (reference-free)
    beta: float = 0.1  # DPO: strength of the KL leash; SimPO: reward scale (the paper uses 2-2.5)
    gamma: float = 1.0  # SimPO target margin in reward units (ignored by DPO)
    label_smoothing: float = 0.0  # DPO only: conservative-DPO label noise
    sft_weight: float = 0.0  # DPO only: + w * mean NLL of the chosen tokens (RPO; trl loss_type=["sigmoid", "sft"])


def _dpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    logps, mask, logits = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                               return_logits=True)
    with torch.no_grad():
        ref_logps, _, ref_logits = _forward_token_logps(ref_model, batch["input_ids"], batch["attention_mask"],
                                                        batch["loss_mask"], return_logits=True)
    pc, pr = logps.sum(1).chunk(2)  # (B,) each: chosen rows first
    rc, rr = ref_logps.sum(1).chunk(2)
    losses, r_c, r_r = dpo_loss(pc, pr, rc, rr, cfg.beta, label_smoothing=cfg.label_smoothing)
    kl = token_kl(logits[:, :-1].detach(), ref_logits[:, :-1], mask)
    loss = losses.mean()
    if cfg.sft_weight:  # keep the chosen replies likely: pure DPO can lower them along with the rejected ones
        B = pc.shape[0]
        loss = loss + cfg.sft_weight * -logps[:B][mask[:B]].mean()
    return loss, _metrics(r_c, r_r, pc, pr, mask) | {"kl": kl.item()}


def _simpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    logps, mask = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    avg = logps.sum(1) / mask.sum(1)  # (2B,) per-token average
    ac, ar = avg.chunk(2)
    losses, r_c, r_r = simpo_loss(ac, ar, cfg.beta, cfg.gamma)
    pc, pr = logps.sum(1).chunk(2)
    return losses.mean(), _metrics(r_c, r_r, pc, pr, mask)


def _metrics(r_c, r_r, pc, pr, mask) -> dict[str, float]:
    return {"acc": (r_c > r_r).float().mean().item(), "margin": (r_c - r_r).mean().item(),
            "logp_chosen": pc.detach().mean().item(), "logp_rejected": pr.detach().mean().item()}


# Each method: (policy, reference or None, batch, PreferenceConfig) -> (mean loss, metrics dict).
PREFERENCE_METHODS: dict[str, Callable] = {"dpo": _dpo_step, "simpo": _simpo_step}


def make_loss_fn(cfg: PreferenceConfig, ref_model=None) -> Callable:
    """A `loss_fn(model, batch) -> (loss, metrics)` for train.train; DPO needs the frozen `ref_model`."""
    if not isinstance(cfg, PreferenceConfig):
        raise TypeError(f"cfg must be a PreferenceConfig, got {type(cfg).__name__}")
    check_choice("cfg.method", cfg.method, list(PREFERENCE_METHODS))
    check_number("cfg.beta", cfg.beta, 0, low_open=True, finite=True)
    check_number("cfg.sft_weight", cfg.sft_weight, 0)
    if cfg.method == "dpo" and ref_model is None:
        raise ValueError("method 'dpo' needs ref_model (a frozen copy of the starting policy); use frozen_copy(model)")
    step = PREFERENCE_METHODS[cfg.method]
    return lambda model, batch: step(model, ref_model, batch, cfg)


def frozen_copy(model):
    """A deep copy of `model` in eval mode with requires_grad=False: the DPO reference policy."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def model_bytes(model) -> int:
    """Bytes held by a model's parameters and buffers (what keeping a reference model costs)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
