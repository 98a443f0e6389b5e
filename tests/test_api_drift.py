"""API drift: every keyword our code and notebooks pass to trl / peft / transformers / bitsandbytes still exists.

The collector reads course_utils/*.py and every notebook code cell with `ast`, follows `import` / `from ... import`
bindings to the four libraries, resolves each call (`LoraConfig(...)`, `trl.DPOConfig(...)`,
`AutoModelForCausalLM.from_pretrained(...)`, `bnb.nn.Linear4bit(...)`, and any `.generate(...)`) to the installed
object, and checks each keyword with inspect.signature. A keyword swallowed by **kwargs must appear in the source of
the function that consumes it (from_pretrained) or be a field of the config it fills (PretrainedConfig,
GenerationConfig). This test never skips: a renamed argument in a new trl/peft release fails here, by name.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("trl", "peft", "transformers", "bitsandbytes")
MIN_KWARGS = 100  # the collector found 178 keyword uses when this test was written; fewer means it broke


@dataclass(frozen=True)
class KwargUse:
    where: str  # file (and cell) of the call
    line: int
    target: str  # dotted path of the library object, e.g. "peft.LoraConfig"
    kwarg: str


def _sources() -> list[tuple[str, str]]:
    """(label, python source) for each course_utils module and each notebook (code cells joined, magics translated)."""
    from IPython.core.inputtransformer2 import TransformerManager  # turns %magics / !shell into plain Python

    to_python = TransformerManager().transform_cell
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "course_utils").rglob("*.py"))]
    for nb in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        cells = json.loads(nb.read_text())["cells"]
        code = []
        for i, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            code.append(f"# cell {i}\n{to_python(src)}")
        out.append((str(nb.relative_to(ROOT)), "\n".join(code)))
    return out


def _dotted(node: ast.AST) -> list[str] | None:
    """`a.b.c` -> ["a", "b", "c"]; None for anything that is not a plain name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _bindings(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted library path, from every import in the file (any scope)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in LIBRARIES:
                for a in node.names:
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def collect() -> list[KwargUse]:
    """Every keyword argument passed to a library callable (or to `.generate`) in our code and notebooks."""
    uses = []
    for label, src in _sources():
        tree = ast.parse(src, filename=label)
        names = _bindings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.keywords:
                continue
            chain = _dotted(node.func)
            if chain and chain[0] in names:
                target = ".".join([names[chain[0]]] + chain[1:])
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "generate" and chain and chain[0] not in (
                    "cu", "course_utils", "decoding", "D", "dec"):
                target = "transformers.GenerationMixin.generate"  # model.generate(...) on a transformers model
            else:
                continue
            for kw in node.keywords:
                if kw.arg is not None:  # **kwargs splats are checked where they are built
                    uses.append(KwargUse(label, node.lineno, target, kw.arg))
    return uses


@functools.lru_cache(maxsize=None)
def resolve(target: str):
    """Import the dotted path: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(f"cannot import any prefix of {target}")


@functools.lru_cache(maxsize=None)
def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def accepts(target: str, kwarg: str) -> bool:
    """Does the installed library callable at `target` accept keyword `kwarg`?"""
    import transformers

    obj = resolve(target)
    # a class takes its keywords in __init__, or in __new__ for tensor subclasses such as bnb.nn.Params4bit
    fns = [obj.__init__, obj.__new__] if inspect.isclass(obj) else [obj]
    params = {}
    for fn in fns:
        try:
            for name, par in inspect.signature(fn).parameters.items():
                params.setdefault(name, par)
        except (TypeError, ValueError):  # a builtin without a signature
            continue
    var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if kwarg in params and params[kwarg].kind not in var:
        return True
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return False
    # swallowed by **kwargs: find who consumes it
    if inspect.isclass(obj) and issubclass(obj, transformers.PretrainedConfig):
        return kwarg in transformers.PretrainedConfig().to_dict() or hasattr(obj(), kwarg)
    if target.endswith(".generate"):
        return hasattr(transformers.GenerationConfig(), kwarg) or kwarg in ("attention_mask", "input_ids")
    if target.endswith((".from_pretrained", ".from_config")):
        if hasattr(transformers.PretrainedConfig(), kwarg):  # forwarded to the model's config (e.g. num_labels)
            return True
        consumers = [transformers.PreTrainedModel.from_pretrained, transformers.PreTrainedModel._from_config,
                     transformers.PretrainedConfig.from_pretrained, transformers.PreTrainedTokenizerBase.from_pretrained]
    elif inspect.isclass(obj):  # e.g. a tokenizer: keywords popped in some base class's __init__
        consumers = [c.__init__ for c in obj.__mro__ if c.__module__.split(".")[0] in LIBRARIES]
    else:
        return False
    text = "".join(_source(getattr(c, "__func__", c)) for c in consumers)
    return re.search(rf"""["']{re.escape(kwarg)}["']|\b{re.escape(kwarg)}\s*[:=]""", text) is not None


USES = collect()


def test_collector_finds_calls():
    """Guard against a vacuous pass: the collector must see the library calls we know are there."""
    targets = {u.target.rsplit(".", 1)[-1] for u in USES}
    assert len(USES) >= MIN_KWARGS, f"only {len(USES)} keyword uses collected: {sorted(targets)}"
    for expected in ("LoraConfig", "BitsAndBytesConfig", "Qwen3Config", "SFTConfig", "from_pretrained", "generate"):
        assert expected in targets, f"collector no longer sees {expected} calls; saw {sorted(targets)}"


def test_checker_catches_a_renamed_argument():
    """The check itself can fail: arguments that do not exist (or were renamed long ago) are rejected."""
    assert not accepts("peft.LoraConfig", "lora_rank")
    assert not accepts("trl.SFTConfig", "max_seq_len_typo")
    assert not accepts("transformers.BitsAndBytesConfig", "load_in_3bit")
    assert not accepts("transformers.GenerationMixin.generate", "max_new_tokenz")
    assert not accepts("transformers.AutoModelForCausalLM.from_pretrained", "quantisation_config")
    assert accepts("peft.LoraConfig", "lora_alpha") and accepts("trl.SFTConfig", "max_length")


@pytest.mark.parametrize("target", sorted({u.target for u in USES}))
def test_keywords_still_exist(target):
    """Each keyword we pass to `target` is accepted by the installed version (names the file and line if not)."""
    uses = [u for u in USES if u.target == target]
    bad = [f"{u.where}:{u.line} {u.kwarg}=" for u in uses if not accepts(target, u.kwarg)]
    assert not bad, f"{target} no longer accepts: {bad}"
