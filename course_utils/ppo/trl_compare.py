"""Our RLOO next to trl's RLOOTrainer on one batch that trl sampled and scored itself.

    out = trl_rloo_batch(trainer, rows, reward_funcs)   # trl's advantages and loss, and ours from our functions
"""

from __future__ import annotations

import torch

from ..grpo import completion_logprobs
from .losses import rloo_advantages, rloo_loss


def trl_rloo_batch(trainer, rows: list[dict], reward_funcs: list, *, ratio_noise: float = 0.3, seed: int = 0) -> dict:
    """trl's RLOOTrainer samples and scores `rows` (each prompt repeated num_generations times, as its sampler does);
    we recompute the rewards with the same `reward_funcs` on the decoded replies, our log-probs and KL, and
    rloo_advantages; then trl's _compute_loss and our rloo_loss on that batch, with the old log-probs moved by
    `ratio_noise` (seeded) so that the clip acts.

    Returns {"trl_advantages", "our_advantages", "trl_old_logps", "our_logps" (N,), "trl_loss", "our_loss" (scalars)}.
    """
    from trl import RLOOTrainer

    if not isinstance(trainer, RLOOTrainer):
        raise TypeError(f"trainer must be a trl RLOOTrainer, got {type(trainer).__name__}")
    G, beta = trainer.num_generations, trainer.beta
    with torch.no_grad():
        out = trainer._generate_and_score_completions(rows)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)  # (N, P + C)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    C, mask = out["completion_ids"].shape[1], out["completion_mask"].float()
    texts = trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    rewards = sum(torch.tensor(f(texts, **columns), dtype=torch.float32) for f in reward_funcs)  # (N,)
    with torch.no_grad():
        logps = completion_logprobs(trainer.model, ids, am, C)  # (N, C)
        kl = ((logps - completion_logprobs(trainer.ref_model, ids, am, C)) * mask).sum(1) if beta else 0.0
    advantages = rloo_advantages(rewards - beta * kl, G)  # (N,)
    gen = torch.Generator().manual_seed(seed)
    old = out["old_logps"] + ratio_noise * torch.randn(len(advantages), generator=gen)
    was_training = trainer.model.training
    trainer.model.train()
    try:
        trl_loss = trainer._compute_loss(trainer.model, {**out, "old_logps": old})
        ours = rloo_loss((completion_logprobs(trainer.model, ids, am, C) * mask).sum(1), old, out["advantages"])
    finally:
        trainer.model.train(was_training)
    return {"trl_advantages": out["advantages"], "our_advantages": advantages, "trl_old_logps": out["old_logps"],
            "our_logps": (logps * mask).sum(1), "trl_loss": trl_loss.detach(), "our_loss": ours.detach()}
