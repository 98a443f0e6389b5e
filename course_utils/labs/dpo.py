"""The DPO lab as a script: the notebook's preference pairs, a preference loss (any dpo.PREFERENCE_METHODS key: dpo,
robust, ipo, hinge, kto, simpo, orpo) and the shared training loop.

    python -m course_utils.labs.dpo --config configs/dpo_ci.json
    torchrun --nproc_per_node 2 -m course_utils.labs.dpo --config configs/dpo_ci.json        # data parallel
    accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml -m course_utils.labs.dpo --config ...

The policy starts from `model` (by default the SFT checkpoint data/course-tiny-sft, as in notebook 08); methods in
dpo.NEEDS_REFERENCE (dpo, robust, ipo, hinge, kto) score it against a frozen copy of that starting model, also after a
resume; simpo and orpo are reference-free and keep no copy. `global_batch_size` pairs per step are
split evenly over the processes (each rank's loss is the mean over its pairs, so the rank average is the global mean).
Offline pairs: `n_sampled` > 0 samples `group_size` replies from the starting model for that many train prompts of
`online_families` and keeps a right and a wrong reply of each mixed group (notebook 08, section 8.2), plus `n_pairs`
rule-made pairs (0 for none). With `"online": true` the pairs are sampled from the policy at every step instead
(section 8.4): each process samples its own share, on train prompts of `online_families`.
A run resumes from the latest complete checkpoint in <out_dir>/checkpoints unless --no-resume is given.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import dpo
from ..checks import check_choice
from ..data import TASK_FAMILIES, make_eval_tasks, make_tasks
from ..train import TrainConfig, train
from .common import (check_families, init_distributed, lab_main, loss_summary, micro_batch, process_device,
                     read_config, resolve_model)


@dataclass
class DPOLabConfig:
    """One preference-tuning run; a JSON file with any of these keys overrides the defaults."""

    model: str = "course-tiny-sft"  # a folder under data/, a load_model name, a local folder or a hub id
    n_pairs: int = 3000  # rule-made preference pairs (train split)
    n_sampled: int = 0  # on-policy pairs sampled once from the starting model on this many train prompts (0 = none)
    n_policy: int = 0  # extra on-policy pairs from the model's own wrong replies (greedy generation; 0 = none)
    online: bool = False  # online DPO: fresh pairs sampled from the policy every step (n_pairs, n_sampled, n_policy unused)
    online_families: list[str] = field(default_factory=lambda: ["addition"])  # sampled / online prompts (train split)
    group_size: int = 4  # sampled and online pairs: replies sampled per prompt
    steps: int = 100  # optimizer steps
    global_batch_size: int = 8  # pairs per step, summed over all processes
    grad_accum: int = 1  # micro-batches per step (each process)
    lr: float = 3e-4  # peak AdamW learning rate (warm-up then cosine)
    warmup: int = 10  # warm-up steps
    method: str = "dpo"  # a dpo.PREFERENCE_METHODS key: dpo, robust, ipo, hinge, kto (reference) | simpo, orpo (none)
    beta: float = 0.1  # DPO family: KL leash strength; IPO: margin target 1/(2β); SimPO: reward scale; ORPO: λ
    gamma: float = 1.0  # SimPO target margin
    label_smoothing: float = 0.0  # dpo: conservative-DPO label noise; robust: rDPO's assumed label flip rate
    desirable_weight: float = 1.0  # kto: weight of the chosen (desirable) completions
    undesirable_weight: float = 1.0  # kto: weight of the rejected (undesirable) completions
    out_dir: str = "runs/dpo"  # checkpoints/, losses.json, metrics.json and final/ go here
    save_every: int = 25  # checkpoint every N steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept on disk
    log_every: int = 10  # print the loss every N steps (0 = silent)
    eval_pairs: int = 0  # held-out test pairs for reward accuracy / KL at the end (0 = skip)
    eval_tasks: int = 0  # held-out test tasks per trained family: greedy exact match before and after (0 = skip)
    save_final: bool = True  # write <out_dir>/final with save_pretrained (rank 0)
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    seed: int = 0
    threads: int = 0  # torch CPU threads per process (0 = torch's default)


def load_config(path: str | os.PathLike | None, **overrides) -> DPOLabConfig:
    """DPOLabConfig from a JSON file (unknown keys are an error), then keyword overrides."""
    cfg = read_config(DPOLabConfig, path, overrides, {"n_pairs": 0, "n_sampled": 0, "steps": 1, "global_batch_size": 1,
                                                      "grad_accum": 1, "n_policy": 0, "eval_pairs": 0, "eval_tasks": 0,
                                                      "group_size": 2})
    if not isinstance(cfg.online, bool):
        raise ValueError(f"online must be true or false, got {cfg.online!r}")
    check_families("online_families", cfg.online_families)
    check_choice("method", cfg.method, list(dpo.PREFERENCE_METHODS))
    if not cfg.online and cfg.n_pairs + cfg.n_sampled + cfg.n_policy == 0:
        raise ValueError("n_pairs, n_sampled and n_policy are all 0: set one above 0 for offline pairs, "
                         "or online to true")
    return cfg


def shard_pairs(global_batch_fn, rank: int, world: int):
    """step -> this rank's pairs of the global batch (chosen rows first, then the matching rejected rows)."""
    def batch_fn(step: int) -> dict:
        full = global_batch_fn(step)  # each (2B, T): chosen rows 0..B-1, rejected rows B..2B-1
        B = full["input_ids"].shape[0] // 2
        per = B // world
        rows = list(range(rank * per, (rank + 1) * per)) + list(range(B + rank * per, B + (rank + 1) * per))
        return {k: v[rows] for k, v in full.items()}  # (2B / world, T)
    return batch_fn


def run(cfg: DPOLabConfig, *, resume: bool = True, stop_at_step: int | None = None) -> dict:
    """Preference-tune cfg.model with dpo.make_loss_fn and train.train; returns a summary (rank 0 writes files)."""
    from ..models import load_model

    rank, world = init_distributed()
    micro = micro_batch(cfg, world)  # pairs per micro-step over all ranks
    dev = process_device(cfg, world)
    model, tok = load_model(resolve_model(cfg.model), device=dev)
    pcfg = dpo.PreferenceConfig(cfg.method, beta=cfg.beta, gamma=cfg.gamma, label_smoothing=cfg.label_smoothing,
                                desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
    # the starting policy, before any resume; reference-free methods skip the copy (and its memory)
    ref_model = dpo.frozen_copy(model) if dpo.needs_reference(cfg.method) else None
    eval_families = cfg.online_families if cfg.online else list(TASK_FAMILIES)
    held_tasks = make_eval_tasks(cfg.eval_tasks, "test", seed=cfg.seed + 1, families=eval_families) if cfg.eval_tasks else []
    if cfg.online:  # each rank samples its own pairs with its own seed
        pairs = []
        train_tasks = make_tasks(4000, "train", seed=cfg.seed, families=cfg.online_families)
        batch_fn = dpo.make_online_pair_batch_fn(model, tok, train_tasks, micro // world, group_size=cfg.group_size,
                                                 seed=cfg.seed + 1009 * rank)
    else:
        pairs = dpo.make_preference_pairs(cfg.n_pairs, "train", seed=cfg.seed) if cfg.n_pairs else []
        if cfg.n_sampled:
            prompts = make_tasks(cfg.n_sampled, "train", seed=cfg.seed, families=cfg.online_families)
            pairs += dpo.sampled_pairs(model, tok, prompts, cfg.group_size,
                                       generator=torch.Generator().manual_seed(cfg.seed))
        if cfg.n_policy:
            pairs += dpo.model_mistake_pairs(model, tok, make_tasks(cfg.n_policy, "train", seed=cfg.seed + 5))
        examples = dpo.tokenize_pairs(tok, pairs)
        batch_fn = shard_pairs(dpo.make_pair_batch_fn(examples, micro, tok.pad_token_id, seed=cfg.seed), rank, world)
    before = dpo.evaluate_replies(model, tok, held_tasks)["accuracy"] if held_tasks and rank == 0 else None
    out = Path(cfg.out_dir)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, grad_accum=cfg.grad_accum,
                       log_every=cfg.log_every, checkpoint_dir=out / "checkpoints", save_every=cfg.save_every or cfg.steps,
                       keep_last=cfg.keep_last, seed=cfg.seed)
    t0 = time.time()
    result = train(model, dpo.make_loss_fn(pcfg, ref_model), batch_fn, tcfg, resume=resume, stop_at_step=stop_at_step)
    summary = {"config": asdict(cfg), "rank": rank, "world_size": world, "n_pairs": len(pairs),
               "losses": result.losses, "metrics": result.metrics, "step": result.step,
               "resumed_from": result.resumed_from, "saved": result.saved, "seconds": round(time.time() - t0, 2)}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.eval_pairs:
            held = dpo.tokenize_pairs(tok, dpo.make_preference_pairs(cfg.eval_pairs, "test", seed=cfg.seed + 1))
            summary["held_out"] = dpo.evaluate_pairs(model, held, tok.pad_token_id, ref_model=ref_model, beta=cfg.beta)
        if held_tasks:
            summary["held_out_accuracy"] = {"before": before, "after": dpo.evaluate_replies(model, tok, held_tasks)["accuracy"]}
        (out / "losses.json").write_text(json.dumps(result.losses))
        (out / "metrics.json").write_text(json.dumps(result.metrics))
        if cfg.save_final and result.step == cfg.steps:
            model.save_pretrained(out / "final")
            tok.save_pretrained(out / "final")
    return summary


def summary_line(summary: dict) -> dict:
    """What the script prints last: world size, step, resume step, seconds, final loss, reward accuracy (and the
    held-out numbers)."""
    shown = loss_summary(summary, ("world_size", "step", "resumed_from", "seconds"))
    shown["reward_acc"] = round(summary["metrics"][-1].get("acc", float("nan")), 3)
    for key in ("held_out", "held_out_accuracy"):
        if key in summary:
            shown[key] = {k: round(v, 3) for k, v in summary[key].items()}
    return shown


def main(argv: list[str] | None = None) -> None:
    lab_main(argv, doc=__doc__, config_cls=DPOLabConfig, load_config=load_config, run=run, summary_line=summary_line,
             stop_at_help="stop after this many steps (the schedule still spans --steps)")


if __name__ == "__main__":
    main()
