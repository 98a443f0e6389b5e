"""Our GRPO next to trl's GRPOTrainer on one batch: trl's own per-token log-probs and loss on our rollout.

    logps, loss = trl_logps_and_loss(trainer, rollout, advantages, old_logps, ref_logps)
"""

from __future__ import annotations

import torch

from .rollout import Rollout


def trl_logps_and_loss(trainer, rollout: Rollout, advantages: torch.Tensor, old_logps: torch.Tensor | None,
                       ref_logps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """trl's per-token log-probs (N, C) of `rollout` under trainer.model, and trl's loss (scalar, with gradient) on
    that batch, computed by GRPOTrainer._get_per_token_logps_and_entropies and GRPOTrainer._compute_loss themselves.

    advantages (N,); old_logps / ref_logps (N, C) or None, as grpo_loss takes them. One accumulation step.
    """
    from trl import GRPOTrainer

    if not isinstance(trainer, GRPOTrainer):
        raise TypeError(f"trainer must be a trl GRPOTrainer, got {type(trainer).__name__}")
    model, C = trainer.model, rollout.completion_ids.shape[1]
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, rollout.input_ids, rollout.attention_mask, C)
    inputs = {"prompt_ids": rollout.prompt_ids, "prompt_mask": rollout.prompt_mask,
              "completion_ids": rollout.completion_ids, "completion_mask": rollout.completion_mask,
              "advantages": advantages, "old_per_token_logps": old_logps, "ref_per_token_logps": ref_logps,
              "num_items_in_batch": rollout.completion_mask.sum()}
    trainer.current_gradient_accumulation_steps = 1  # set by trl's training loop; we call one step outside it
    was_training = model.training
    model.train()
    try:
        loss = trainer._compute_loss(model, inputs)
    finally:
        model.train(was_training)
    return logps, loss
