"""The GRPO lab as a script: the notebook's tasks, rewards and grpo.train_grpo loop, with checkpoints and resume.

    python -m course_utils.labs.grpo --config configs/grpo_ci.json

Controls and variants are config keys: "rewards": "random" or "format_only" (rewards that say nothing about the
answer); DAPO: "loss_type": "dapo", "clip_eps_high": 0.28, "dynamic_sampling": true, "overlong_buffer": 8, "beta": 0;
Dr. GRPO: "loss_type": "dr_grpo", "scale_rewards": false.

One process only: our GRPO loop samples and trains in the same process. For several GPUs use trl's GRPOTrainer
under `accelerate launch` (configs/accelerate/README.md), which shards generation and training.
The policy starts from `model` (by default the SFT checkpoint data/course-tiny-sft, as in notebook 09); the KL
reference is a frozen copy of that starting model, also after a resume. A run resumes from the latest complete
checkpoint in <out_dir>/checkpoints unless --no-resume is given; prompts and samples are seeded per round, so a
resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import grpo
from ..checks import check_choice
from ..data import make_eval_tasks, make_tasks
from ..rewards import REWARD_SETS
from ..train import _prune
from .common import check_families, init_distributed, lab_main, process_device, read_config, resolve_model


@dataclass
class GRPOLabConfig:
    """One GRPO run; a JSON file with any of these keys overrides the defaults (the rest map onto grpo.GRPOConfig)."""

    model: str = "course-tiny-sft"  # a folder under data/, a load_model name, a local folder or a hub id
    families: list[str] = field(default_factory=lambda: ["addition"])  # task families to train on
    n_train: int = 4000  # training tasks (train split)
    eval_per_family: int = 0  # held-out tasks per family for greedy accuracy (0 = skip)
    rewards: str = "all"  # "default" (format + accuracy) | "all" (+ digits) | controls: "format_only" | "random"
    steps: int = 100  # generation rounds
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 40  # an addition reply with its work is about 32 tokens
    temperature: float = 1.0
    lr: float = 5e-5  # 3e-4 made held-out accuracy fall on course-tiny-sft
    num_iterations: int = 2
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # DAPO's clip-higher, e.g. 0.28
    beta: float = 0.04
    loss_type: str = "grpo"  # "grpo" | "bnpo" | "dapo" | "dr_grpo"
    scale_rewards: bool = True  # False with loss_type "dr_grpo" is Dr. GRPO
    dynamic_sampling: bool = False  # DAPO: drop groups with equal rewards and refill
    mask_truncated_completions: bool = False
    overlong_buffer: int = 0  # DAPO's soft overlong penalty over the last N tokens (0 = off)
    eval_every: int = 0  # greedy held-out accuracy every N rounds (needs eval_per_family)
    out_dir: str = "runs/grpo"  # checkpoints/, history.json and final/ go here
    save_every: int = 25  # checkpoint every N rounds (the last round is always saved)
    keep_last: int = 2  # checkpoints kept on disk
    log_every: int = 10  # print one line every N rounds (0 = silent)
    save_final: bool = True  # write <out_dir>/final with save_pretrained
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)


_GRPO_FIELDS = ("steps", "prompts_per_step", "group_size", "max_new_tokens", "temperature", "lr", "num_iterations",
                "clip_eps", "clip_eps_high", "beta", "loss_type", "scale_rewards", "dynamic_sampling",
                "mask_truncated_completions", "overlong_buffer", "eval_every", "seed")


def load_config(path: str | os.PathLike | None, **overrides) -> GRPOLabConfig:
    """GRPOLabConfig from a JSON file (unknown keys are an error), then keyword overrides."""
    cfg = read_config(GRPOLabConfig, path, overrides, {"n_train": 1})
    check_choice("rewards", cfg.rewards, list(REWARD_SETS))
    check_families("families", cfg.families)
    grpo._check_config(grpo_config(cfg))  # steps, group_size, lr, loss_type, ... named as cfg.<field>
    return cfg


def grpo_config(cfg: GRPOLabConfig) -> grpo.GRPOConfig:
    """The grpo.GRPOConfig this lab config describes (checkpoint every save_every rounds, or only at the end)."""
    return grpo.GRPOConfig(**{k: getattr(cfg, k) for k in _GRPO_FIELDS}, save_every=cfg.save_every or cfg.steps)


def run(cfg: GRPOLabConfig, *, resume: bool = True, stop_at_step: int | None = None) -> dict:
    """GRPO on cfg.families with grpo.train_grpo; returns a summary and writes history.json (and final/)."""
    from ..models import load_model

    rank, world = init_distributed()
    if world > 1:
        raise RuntimeError("the GRPO lab script runs on one process (sampling and training share it); for several "
                           "GPUs use trl's GRPOTrainer under `accelerate launch` -- see configs/accelerate/README.md")
    dev = process_device(cfg, world)
    model, tok = load_model(resolve_model(cfg.model), device=dev)
    reference = copy.deepcopy(model).requires_grad_(False) if cfg.beta > 0 else None  # before any resume
    tasks = make_tasks(cfg.n_train, "train", seed=cfg.seed, families=cfg.families)
    eval_tasks = (make_eval_tasks(cfg.eval_per_family, "test", seed=cfg.seed + 1, families=cfg.families)
                  if cfg.eval_per_family else None)
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    result = grpo.train_grpo(model, tok, tasks, grpo_config(cfg), ref_model=reference, eval_tasks=eval_tasks,
                             reward_funcs=REWARD_SETS[cfg.rewards], checkpoint_dir=ckpt_dir, resume=resume,
                             stop_at_step=stop_at_step, log_every=cfg.log_every)
    _prune(ckpt_dir, cfg.keep_last)
    rounds = [h for h in result.history if "loss" in h]
    summary = {"config": asdict(cfg), "rank": 0, "world_size": 1, "history": result.history,
               "step": rounds[-1]["step"] if rounds else 0, "resumed_from": result.resumed_from,
               "seconds": round(result.seconds, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(result.history))
    if cfg.save_final and summary["step"] == cfg.steps:
        model.save_pretrained(out / "final")
        tok.save_pretrained(out / "final")
    return summary


def summary_line(summary: dict) -> dict:
    """What the script prints last: step, resume step, seconds, the last round's reward and KL, first and last
    held-out accuracy."""
    last = next((h for h in reversed(summary["history"]) if "reward" in h), {})
    evals = [h for h in summary["history"] if "eval_acc" in h]
    shown = {k: summary[k] for k in ("step", "resumed_from", "seconds")}
    shown.update({k: round(last[k], 4) for k in ("reward", "kl") if k in last})
    if evals:
        shown["eval_acc"] = [evals[0]["eval_acc"], evals[-1]["eval_acc"]]
    return shown


def main(argv: list[str] | None = None) -> None:
    lab_main(argv, doc=__doc__, config_cls=GRPOLabConfig, load_config=load_config, run=run, summary_line=summary_line,
             stop_at_help="stop after this many rounds (a simulated interruption)")


if __name__ == "__main__":
    main()
