"""The machine the course runs on: device, run profile, seeding and a set-up doctor."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import warnings
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import check_choice, check_int

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE_TINY_DIR = REPO_ROOT / "data" / "course-tiny"  # the committed course model

# bitsandbytes warns at import on AVX512-BF16 CPUs that an optional kernel package is missing; its pure
# fallback is what we use, and the warning would make notebook outputs depend on the CPU model.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# transformers 5 renamed gradient checkpointing; peft and trl 1.x still use the old names. The warning names a
# path inside the virtual environment, which would make stored notebook outputs depend on the install folder.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing` is deprecated", category=FutureWarning)
PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    """Sizes a notebook reads instead of hard-coding them. Override with `dataclasses.replace`."""

    name: str  # "ci" | "cpu" | "gpu"
    model: str = "course-tiny"  # default model for labs and demos
    train_steps: int = 30  # optimizer steps in a training lab
    batch_size: int = 8  # sequences per optimizer step
    seq_len: int = 128  # tokens per training sequence
    eval_examples: int = 40  # held-out examples per evaluation
    n_prompts: int = 8  # prompts in a decoding / repetition study
    max_new_tokens: int = 40  # tokens generated per prompt
    bench_lengths: tuple[int, ...] = (64, 128, 256)  # sequence lengths in timing demos
    # torch CPU threads; fixed in ci so outputs do not depend on the machine, and 1 so that two notebooks
    # run side by side by pytest-xdist do not oversubscribe two cores. None: torch's default.
    threads: int | None = 1
    progress_bars: bool = False  # tqdm / trainer progress output


_PROFILES = {
    "ci": Profile(name="ci"),
    "cpu": Profile(
        name="cpu", train_steps=300, batch_size=16, seq_len=256, eval_examples=200,
        n_prompts=32, max_new_tokens=80, bench_lengths=(128, 256, 512, 1024, 2048),
        threads=None, progress_bars=True,
    ),
    "gpu": Profile(
        name="gpu", model="course-tiny", train_steps=1000, batch_size=32, seq_len=256,
        eval_examples=500, n_prompts=64, max_new_tokens=128,
        bench_lengths=(256, 512, 1024, 2048, 4096, 8192), threads=None, progress_bars=True,
    ),
}


def device() -> torch.device:
    """The best available device: cuda, then mps, then cpu. `COURSE_DEVICE` overrides."""
    requested = os.environ.get("COURSE_DEVICE")
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def profile(name: str | None = None) -> Profile:
    """The run profile: `name`, else `COURSE_PROFILE`, else "gpu" with CUDA and "cpu" without.

    >>> profile("ci").train_steps
    30
    """
    chosen = name or os.environ.get("COURSE_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    prof = _PROFILES[check_choice("name" if name else "COURSE_PROFILE", chosen, PROFILE_NAMES)]
    model = os.environ.get("COURSE_MODEL")
    if model:
        prof = dataclasses.replace(prof, model=model)
    if prof.threads is not None:
        torch.set_num_threads(prof.threads)
    if not prof.progress_bars:
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return prof


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU `torch.Generator` with that seed."""
    check_int("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _check_python():
    ok = sys.version_info[:2] in ((3, 10), (3, 11), (3, 12))
    return ok, f"Python {sys.version.split()[0]}", "install Python 3.10-3.12 (3.11 is tested)"


def _check_torch():
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return True, f"torch {torch.__version__} ({build})", ""


def _check_cuda():
    if not torch.cuda.is_available():
        return (False, "no CUDA GPU: labs run on CPU in the cpu/ci profiles",
                "optional: on a rented GPU run `COURSE_PROFILE=gpu make lab`")
    props = torch.cuda.get_device_properties(0)
    return True, f"GPU {props.name}, {props.total_memory / 2**30:.1f} GiB", ""


def _check_bitsandbytes():
    try:
        import bitsandbytes as bnb  # noqa: F401
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
        q, state = quantize_4bit(w, quant_type="nf4")
        err = (dequantize_4bit(q, state) - w).abs().max().item()
    except Exception as exc:  # any import or kernel failure means "not usable here"
        return (False, f"bitsandbytes not usable ({type(exc).__name__}: {exc})",
                "`make setup` installs it; QLoRA falls back to the pure-PyTorch NF4 path")
    return err < 1.0, f"bitsandbytes {bnb.__version__} (NF4 round trip max error {err:.3f})", "reinstall with `make setup`"


def _check_course_model():
    files = ["config.json", "model.safetensors", "tokenizer.json"]
    missing = [f for f in files if not (COURSE_TINY_DIR / f).exists()]
    if missing:
        return False, f"course-tiny missing {missing}", "restore data/course-tiny from git or run `python -m course_utils.pretrain`"
    size = sum((COURSE_TINY_DIR / f).stat().st_size for f in files) / 2**20
    return True, f"course-tiny present ({size:.1f} MiB)", ""


def _check_widgets():
    try:
        ipywidgets = importlib.import_module("ipywidgets")
        importlib.import_module("jupyterlab_widgets")
    except ImportError as exc:
        return False, f"ipywidgets front-end missing ({exc.name})", "run `make setup` (installs ipywidgets and jupyterlab_widgets)"
    return True, f"ipywidgets {ipywidgets.__version__} with the JupyterLab front-end", ""


def _check_disk():
    free = shutil.disk_usage(REPO_ROOT).free / 2**30
    return free > 2, f"{free:.1f} GiB free disk", "free at least 2 GiB for checkpoints"


_CHECKS = {
    "python": _check_python,
    "torch": _check_torch,
    "cuda": _check_cuda,
    "bitsandbytes": _check_bitsandbytes,
    "course model": _check_course_model,
    "widgets": _check_widgets,
    "disk": _check_disk,
}
_OPTIONAL = {"cuda"}  # a missing GPU is reported, not counted as a failure


def _run_check(check) -> tuple[bool, str, str]:
    try:
        return check()
    except Exception as exc:  # a broken check is itself a FAIL, never a crash
        return False, f"{type(exc).__name__}: {exc}", "see the troubleshooting section of README.md"


def failed_checks() -> list[str]:
    """Names of the required doctor() checks that fail here, without printing (e.g. ["bitsandbytes"])."""
    return [name for name, check in _CHECKS.items() if name not in _OPTIONAL and not _run_check(check)[0]]


def doctor() -> bool:
    """Print one OK/FAIL line per check (with how to fix a FAIL); return True when nothing required failed."""
    all_ok = True
    for name, check in _CHECKS.items():
        ok, what, fix = _run_check(check)
        status = "OK  " if ok else ("INFO" if name in _OPTIONAL else "FAIL")
        print(f"{status} {name:13s} {what}" + ("" if ok else f"  -> {fix}"))
        all_ok &= ok or name in _OPTIONAL
    return all_ok
