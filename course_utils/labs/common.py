"""What the three lab scripts share: the command line and its summary line, the config file, the process's place in
a (torchrun / accelerate launch) process group and its device, and where a model name points."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from ..checks import check_int
from ..data import TASK_FAMILIES
from ..env import REPO_ROOT, device as best_device
from ..train import dist_info


def lab_main(argv: list[str] | None, *, doc: str, config_cls: type, load_config: Callable, run: Callable,
             summary_line: Callable[[dict], dict], stop_at_help: str | None = None) -> None:
    """A lab script's command line: --config, --out-dir, --steps, --stop-at (when stop_at_help), --no-resume.

    Runs `run(load_config(...))`; rank 0 prints summary_line(summary) as one JSON line, the output's last.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help=f"JSON file with {config_cls.__name__} fields")
    parser.add_argument("--out-dir", help="override out_dir")
    parser.add_argument("--steps", type=int, help="override steps")
    if stop_at_help:
        parser.add_argument("--stop-at", type=int, help=stop_at_help)
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if checkpoints exist")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, out_dir=args.out_dir, steps=args.steps)
    summary = run(cfg, resume=not args.no_resume, **({"stop_at_step": args.stop_at} if stop_at_help else {}))
    if summary["rank"] == 0:
        print(json.dumps(summary_line(summary)))
    if dist.is_initialized():
        dist.destroy_process_group()


def loss_summary(summary: dict, keys: tuple[str, ...]) -> dict:
    """summary's `keys` (those present) and its last loss, rounded: the start of a training script's summary line."""
    return {k: summary[k] for k in keys if k in summary} | {"final_loss": round(summary["losses"][-1], 4)}


def read_config(cls, path: str | os.PathLike | None, overrides: dict, min_ints: dict[str, int] | None = None):
    """A `cls` dataclass from a JSON file (unknown keys are an error), then non-None overrides.

    min_ints: {field: smallest allowed value} for fields that must be ints, e.g. {"steps": 1, "n_policy": 0}.
    """
    values = json.loads(Path(path).read_text()) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; allowed: {sorted(known)}")
    cfg = cls(**values)
    for name, low in (min_ints or {}).items():
        check_int(name, getattr(cfg, name), low)
    return cfg


def check_families(name: str, families) -> None:
    """A config's task-family list must be a non-empty list of data.TASK_FAMILIES names."""
    if not isinstance(families, list) or not families or not set(families) <= set(TASK_FAMILIES):
        raise ValueError(f"{name} must be a non-empty list from {list(TASK_FAMILIES)}, got {families!r}")


def resolve_model(name: str) -> str:
    """A bare name that is a folder under data/ (e.g. "course-tiny-sft") becomes that folder; else unchanged."""
    local = REPO_ROOT / "data" / name
    if name not in ("course-tiny", "minilm") and not Path(name).is_dir() and (local / "config.json").exists():
        return str(local)
    return name


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun / accelerate launch describe in the environment; (rank, world_size)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or \
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise RuntimeError("this script is data parallel (DDP) only; FSDP and DeepSpeed configs are for "
                           "Accelerator-based trainers such as trl's SFTTrainer -- see configs/accelerate/README.md")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("COURSE_DDP_BACKEND") != "gloo"
                                else "gloo")
    return dist_info()


def micro_batch(cfg, world: int) -> int:
    """Examples per micro-step over all ranks, cfg.global_batch_size / cfg.grad_accum; each rank gets 1/world."""
    if cfg.global_batch_size % (world * cfg.grad_accum):
        raise ValueError(f"global_batch_size={cfg.global_batch_size} must be divisible by world_size x grad_accum "
                         f"= {world} x {cfg.grad_accum}")
    return cfg.global_batch_size // cfg.grad_accum


def process_device(cfg, world: int) -> torch.device:
    """This process's device from cfg.device ("auto" = the best one; cuda:LOCAL_RANK under DDP), after setting
    cfg.threads CPU threads (0 = torch's default) and seeding torch with cfg.seed."""
    dev = best_device() if cfg.device == "auto" else torch.device(cfg.device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return dev
