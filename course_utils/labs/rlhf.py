"""The RLHF lab as a script: a reward model trained on preference pairs, then PPO or RLOO against it, with
checkpoints and resume (notebook 10's pipeline).

    python -m course_utils.labs.rlhf --config configs/rlhf_ci.json

The reward model is trained once and saved to <out_dir>/reward_model (a later run, or a resumed one, reloads it);
the policy starts from `model` (by default the SFT checkpoint) and the KL reference is a frozen copy of it. A run
resumes from the latest complete checkpoint in <out_dir>/checkpoints unless --no-resume is given. "reward":
"verifier" trains on the true reward instead (the comparison of notebook 10); "kl_coef": 0 removes the KL penalty.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import ppo, reward_model as rm_lib
from ..checks import check_int, check_number
from ..data import make_eval_tasks, make_tasks
from ..dpo.pairs import make_preference_pairs
from ..train import _prune
from .common import check_families, init_distributed, lab_main, process_device, read_config, resolve_model


@dataclass
class RLHFLabConfig:
    """One RLHF run; a JSON file with any of these keys overrides the defaults (the rest map onto ppo.PPOConfig)."""

    model: str = "course-tiny-sft"  # policy and reward-model trunk: a folder under data/, a load_model name or folder
    families: list[str] = field(default_factory=lambda: ["sort"])  # task families of the prompts and the pairs
    n_pairs: int = 600  # preference pairs for the reward model (rule-made: a right reply over a corrupted one)
    label_noise: float = 0.1  # fraction of pairs with chosen and rejected swapped
    rm_epochs: float = 2.0
    rm_lr: float = 3e-4
    n_train: int = 2000  # training prompts
    eval_per_family: int = 0  # held-out prompts per family for greedy accuracy (0 = skip)
    algorithm: str = "ppo"  # "ppo" | "rloo"
    reward: str = "model"  # "model" (the proxy) | "verifier" (the true reward)
    steps: int = 100
    prompts_per_step: int = 16
    group_size: int = 2
    max_new_tokens: int = 24  # a sorted list of five numbers is about 11 tokens
    lr: float = 5e-5
    critic_lr: float = 1e-4
    num_epochs: int = 2
    kl_coef: float = 0.05
    eval_every: int = 0
    out_dir: str = "runs/rlhf"  # reward_model/, checkpoints/, history.json and final/ go here
    save_every: int = 25
    keep_last: int = 2
    log_every: int = 10
    save_final: bool = True
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    seed: int = 0
    threads: int = 0


_PPO_FIELDS = ("algorithm", "reward", "steps", "prompts_per_step", "group_size", "max_new_tokens", "lr", "critic_lr",
               "num_epochs", "kl_coef", "eval_every", "seed")


def load_config(path: str | os.PathLike | None, **overrides) -> RLHFLabConfig:
    """RLHFLabConfig from a JSON file (unknown keys are an error), then keyword overrides."""
    cfg = read_config(RLHFLabConfig, path, overrides, {"n_train": 1, "n_pairs": 2})
    check_families("families", cfg.families)
    check_number("label_noise", cfg.label_noise, 0, 0.5)
    check_number("rm_epochs", cfg.rm_epochs, 0, low_open=True)
    check_number("rm_lr", cfg.rm_lr, 0, low_open=True)
    check_int("eval_per_family", cfg.eval_per_family, 0)
    ppo.check_config(ppo_config(cfg))  # algorithm, reward, group_size, ... named as cfg.<field>
    return cfg


def ppo_config(cfg: RLHFLabConfig) -> ppo.PPOConfig:
    """The ppo.PPOConfig this lab config describes (checkpoint every save_every rounds, or only at the end)."""
    return ppo.PPOConfig(**{k: getattr(cfg, k) for k in _PPO_FIELDS}, save_every=cfg.save_every or cfg.steps)


def reward_model_for(cfg: RLHFLabConfig, device) -> tuple:
    """(reward model, tokenizer, held-out pair accuracy or None): <out_dir>/reward_model if saved, else trained now."""
    folder = Path(cfg.out_dir) / "reward_model"
    if (folder / "config.json").exists():
        rm, tok = rm_lib.load_reward_model(str(folder), device=device)
        return rm, tok, None
    rm, tok = rm_lib.load_reward_model(cfg.model, device=device, seed=cfg.seed)
    pairs = make_preference_pairs(cfg.n_pairs, "train", seed=cfg.seed, families=cfg.families)
    rm_lib.train_reward_model(rm, tok, rm_lib.with_label_noise(pairs, cfg.label_noise, cfg.seed),
                              rm_lib.RewardConfig(epochs=cfg.rm_epochs, lr=cfg.rm_lr, seed=cfg.seed))
    test = make_preference_pairs(max(20, cfg.n_pairs // 4), "test", seed=cfg.seed + 1, families=cfg.families)
    accuracy = float((rm_lib.pair_margins(rm, tok, test) > 0).float().mean())
    rm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return rm, tok, accuracy


def run(cfg: RLHFLabConfig, *, resume: bool = True, stop_at_step: int | None = None) -> dict:
    """Reward model, then ppo.train_rlhf on cfg.families; returns a summary and writes history.json (and final/)."""
    from ..models import load_model

    rank, world = init_distributed()
    if world > 1:
        raise RuntimeError("the RLHF lab script runs on one process (sampling and training share it)")
    dev = process_device(cfg, world)
    policy, tok = load_model(resolve_model(cfg.model), device=dev)
    reference = copy.deepcopy(policy).requires_grad_(False)  # before any resume
    rm, _, rm_accuracy = reward_model_for(cfg, dev)
    tasks = make_tasks(cfg.n_train, "train", seed=cfg.seed, families=cfg.families)
    eval_tasks = (make_eval_tasks(cfg.eval_per_family, "test", seed=cfg.seed + 1, families=cfg.families)
                  if cfg.eval_per_family else None)
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    result = ppo.train_rlhf(policy, tok, tasks, rm, ppo_config(cfg), ref_model=reference, eval_tasks=eval_tasks,
                            checkpoint_dir=ckpt_dir, resume=resume, stop_at_step=stop_at_step, log_every=cfg.log_every)
    _prune(ckpt_dir, cfg.keep_last)
    rounds = [h for h in result.history if "proxy" in h]
    summary = {"config": asdict(cfg), "rank": 0, "world_size": 1, "history": result.history,
               "step": rounds[-1]["step"] if rounds else 0, "resumed_from": result.resumed_from,
               "rm_accuracy": rm_accuracy, "seconds": round(result.seconds, 2)}
    (out / "history.json").write_text(json.dumps(result.history))
    if cfg.save_final and summary["step"] == cfg.steps:
        policy.save_pretrained(out / "final")
        tok.save_pretrained(out / "final")
    return summary


def summary_line(summary: dict) -> dict:
    """What the script prints last: step, resume step, seconds, held-out pair accuracy of a newly trained reward
    model, and the last round's proxy reward, true reward and KL."""
    last = next((h for h in reversed(summary["history"]) if "proxy" in h), {})
    shown = {k: summary[k] for k in ("step", "resumed_from", "rm_accuracy", "seconds")}
    shown.update({k: round(last[k], 4) for k in ("proxy", "true", "kl") if k in last})
    return shown


def main(argv: list[str] | None = None) -> None:
    lab_main(argv, doc=__doc__, config_cls=RLHFLabConfig, load_config=load_config, run=run, summary_line=summary_line,
             stop_at_help="stop after this many rounds (a simulated interruption)")


if __name__ == "__main__":
    main()
