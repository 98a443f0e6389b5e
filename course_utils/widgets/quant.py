"""Lecture 11: quant_explorer, one linear layer of course-tiny-sft quantized by a method at a bit width."""

from __future__ import annotations

import ipywidgets as w

from ..checks import check_int
from .core import live_rows, say, show


def quant_explorer(model=None, tokenizer=None, *, n_calibration: int = 32):
    """Layer, method, bits and group size: one linear layer of course-tiny-sft quantized, its relative weight and
    held-out output errors, and one row's float weights against the values left after quantization."""

    from .. import quant
    from ..data import make_sft_conversations
    from ..env import REPO_ROOT
    from ..models import load_model
    from ..plotting import plot_weight_grid, redraw_weight_grid
    from ..sft import build_sft_example, collate

    check_int("n_calibration", n_calibration)
    if model is None:
        model, tokenizer = load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
    names = quant.quantized_linear_names(model)
    calib = collate([build_sft_example(tokenizer, c) for c in make_sft_conversations(n_calibration, "train", seed=5)],
                    tokenizer.pad_token_id)
    test = quant.heldout_batch(tokenizer, n_calibration)
    calib_inputs = quant.collect_linear_inputs(model, calib["input_ids"], calib["attention_mask"])
    test_inputs = quant.collect_linear_inputs(model, test["input_ids"], test["attention_mask"])
    modules = dict(model.named_modules())
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"))  # labels never cut
    layer = w.Dropdown(options=names, value=names[-1], description="layer", **wide)
    method = w.Dropdown(options=["rtn", "gptq", "awq"], value="rtn", description="method", **wide)
    bits = w.IntSlider(value=4, min=2, max=8, description="bits", **wide)
    group = w.Dropdown(options=[("one scale per row", 0), ("groups of 64", 64), ("groups of 32", 32)],
                       value=0, description="scales", **wide)  # 0, not None: None would select nothing

    drawn = {}  # the layer's figure; another method, bit width or grouping moves its grid lines in place

    def update():
        weight = modules[layer.value].weight.detach()
        result = quant.layer_errors(weight, calib_inputs[layer.value], test_inputs[layer.value], method.value,
                                    bits.value, group.value or None)
        say(f"{layer.value} {tuple(weight.shape)}, {method.value} at {bits.value} bits: relative weight error "
            f"{result['weight_error']:.4f}, relative output error on held-out tokens {result['output_error']:.4f}")
        title = f"row 0 of {layer.value}: float weights and the values they round to"
        if drawn.get("layer") == layer.value:
            redraw_weight_grid(drawn["ax"], result["w_hat"][0], title=title)
        else:
            fig, ax = plot_weight_grid(weight[0], result["w_hat"][0], title=title)
            drawn.update(layer=layer.value, fig=fig, ax=ax)
        show(drawn["fig"])

    return live_rows(update, [[layer, method], [bits, group]])
