"""Each lab's training as a script (`python -m course_utils.labs.sft --config configs/sft_ci.json`), calling the
same course_utils code the notebooks call; runs as is under `torchrun` and `accelerate launch` (DDP)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from ..data import TASK_FAMILIES


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
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            allowed = "a positive int" if low == 1 else f"an int >= {low}"
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return cfg


def check_families(name: str, families) -> None:
    """A config's task-family list must be a non-empty list of data.TASK_FAMILIES names."""
    if not isinstance(families, list) or not families or not set(families) <= set(TASK_FAMILIES):
        raise ValueError(f"{name} must be a non-empty list from {list(TASK_FAMILIES)}, got {families!r}")


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
