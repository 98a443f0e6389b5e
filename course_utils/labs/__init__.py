"""Each lab's training as a script (`python -m course_utils.labs.sft --config configs/sft_ci.json`), calling the
same course_utils code the notebooks call; runs as is under `torchrun` and `accelerate launch` (DDP)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch


def read_config(cls, path: str | os.PathLike | None, overrides: dict, positive_ints: tuple[str, ...] = ()):
    """A `cls` dataclass from a JSON file (unknown keys are an error), then non-None overrides.

    Fields named in `positive_ints` must be ints >= 1.
    """
    values = json.loads(Path(path).read_text()) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; allowed: {sorted(known)}")
    cfg = cls(**values)
    for name in positive_ints:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return cfg


def process_device(cfg, world: int) -> torch.device:
    """This process's device from cfg.device ("auto" = the best one; cuda:LOCAL_RANK under DDP), after setting
    cfg.threads CPU threads (0 = torch's default) and seeding torch with cfg.seed."""
    from ..env import device as best_device

    dev = best_device() if cfg.device == "auto" else torch.device(cfg.device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return dev
