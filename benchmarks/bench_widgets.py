"""Seconds per widget update in the kernel, per control: `python benchmarks/bench_widgets.py [--repeats 5] [--out F]`.

What tests/test_browser.py times from a move in the page to the redrawn output is this callback plus 15-50 ms of
messages. Here each widget is built as its notebook builds it in the `cpu` profile (the RAG reader untrained, the
norm explorer's rows from a smaller corpus: neither changes what an update costs), and each control moves to the
end of its range (or its last option, or new text) and back, `repeats` times, with nothing else running. The first
move is reported apart (it may fill a cache), then the median and the maximum of the others.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import ipywidgets as w  # noqa: E402
import torch  # noqa: E402

import course_utils as cu  # noqa: E402
from course_utils.widgets import View  # noqa: E402


def controls(box) -> list:
    """The widget's controls in reading order (not its view, not its hint text)."""
    found = []
    for child in box.children:
        if isinstance(child, w.Box) and not isinstance(child, View):
            found += controls(child)
        elif isinstance(child, w.ValueWidget) and not isinstance(child, w.HTML):
            found.append(child)
    return found


def other_value(control):
    """Where the browser test moves a control: the other end of a slider, the last (or first) option, new text."""
    if isinstance(control, w.Text):
        return "The cat sat on the mat."
    if hasattr(control, "options"):
        values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return values[0] if control.value == values[-1] else values[-1]
    if isinstance(control, w.FloatLogSlider):
        return control.base ** (control.max if control.value != control.base ** control.max else control.min)
    if isinstance(control, w.Checkbox):
        return not control.value
    return control.max if control.value != control.max else control.min


def time_widget(box, repeats: int) -> dict:
    """{control: {"first": s, "median": s, "max": s}} over `repeats` moves there and back."""
    table = {}
    for control in controls(box):
        start, there = control.value, other_value(control)
        seconds = []
        for _ in range(repeats):
            for value in (there, start):
                began = time.perf_counter()
                control.value = value  # the observer redraws synchronously
                seconds.append(time.perf_counter() - began)
            assert "Could not update" not in box.view.shown_text(), box.view.shown_text()
        table[control.description or type(control).__name__] = {
            "first": round(seconds[0], 3), "median": round(statistics.median(seconds[1:]), 3),
            "max": round(max(seconds[1:]), 3)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "widgets_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    from course_utils.data import pretraining_corpus
    from course_utils.pretrain import pack

    model, tok = cu.load_model("course-tiny", attn_implementation="eager")
    encoder, encoder_tok = cu.load_model("minilm")
    make = {  # the notebooks' cells
        "attention_explorer": lambda: cu.widgets.attention_explorer(
            model, tok, "Once upon a time, there was a blue fox named Rosa."),
        "norm_explorer": lambda: cu.widgets.norm_explorer(pack(tok, pretraining_corpus(800, seed=3), 64)[:8], len(tok)),
        "rope_explorer": lambda: cu.widgets.rope_explorer(head_dim=64),
        "moe_explorer": lambda: cu.widgets.moe_explorer(),
        "decoding_explorer": lambda: cu.widgets.decoding_explorer(
            model, tok, "Once upon a time, there was a fox named Rosa. Rosa"),
        "memory_explorer": lambda: cu.widgets.memory_explorer(),
        "quant_explorer": lambda: cu.widgets.quant_explorer(),  # course-tiny-sft, as lecture 11 passes
        "eval_size_explorer": lambda: cu.widgets.eval_size_explorer(),
        "rag_explorer": lambda: cu.widgets.rag_explorer(model, tok, encoder, encoder_tok, world_seed=0),
    }
    results = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "repeats": args.repeats,
               "seconds": {}}
    for name, build in make.items():
        results["seconds"][name] = time_widget(build(), args.repeats)
        print(name, {k: v["median"] for k, v in results["seconds"][name].items()}, flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
