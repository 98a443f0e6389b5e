"""Lecture 01: attention_explorer, one head's attention heatmap and the layers × heads entropy grid of a text."""

from __future__ import annotations

import ipywidgets as w

from ..checks import check_int
from .core import live_rows, say, show


def attention_explorer(model, tokenizer, text: str = "Once upon a time, there was a blue fox named Rosa.",
                       *, max_tokens: int = 48):
    """Text box + layer/head sliders: the attention heatmap of one head and the layers × heads entropy grid.

    The model must return attention weights (load it with attn_implementation="eager"). Inputs longer than
    max_tokens are truncated with a note; a bad input shows a message instead of raising.
    """
    from ..attention import attention_maps
    from ..plotting import new_figure, plot_attention_weights, plot_entropy_grid

    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    check_int("max_tokens", max_tokens)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    box = w.Text(value=text, description="text", placeholder="type, then press Enter",
                 layout=w.Layout(width="95%", min_width="300px"), continuous_update=False)
    hint = w.HTML("<small>Press Enter to redraw after editing the text. "
                  "'�' in a label is part of a character the byte-level tokenizer split over several tokens.</small>")
    layer = w.IntSlider(value=0, min=0, max=n_layers - 1, description="layer", layout=w.Layout(min_width="260px"))
    head = w.IntSlider(value=0, min=0, max=n_heads - 1, description="head", layout=w.Layout(min_width="260px"))
    cache = {}  # the text's maps and its figure, redrawn in place when only the layer or head moves

    def draw():
        if not box.value.strip():
            say("Type some text (not only spaces), then press Enter.")
            return
        title = f"layer {layer.value}, head {head.value}"
        if cache.get("text") != box.value:
            maps = attention_maps(model, tokenizer, box.value, max_tokens=max_tokens)
            fig, axes = new_figure(1, 2, width=3.7, height=3.7)  # 740 px: legible at 1024 px with the sidebar open
            plot_attention_weights(maps["weights"][layer.value, head.value], maps["tokens"], maps["tokens"],
                                   ax=axes[0], title=title)
            plot_entropy_grid(maps["entropy"], uniform=maps["uniform_entropy"], ax=axes[1], title="mean entropy")
            cache.update(text=box.value, maps=maps, fig=fig, ax=axes[0])
        else:  # a new heatmap in the same figure: no axes, colour bars or layout to build again
            weights = cache["maps"]["weights"][layer.value, head.value].float()
            heatmap = cache["ax"].images[0]
            heatmap.set_data(weights.numpy())
            heatmap.set_clim(0.0, weights.max().item())  # as plot_attention_weights scales it
            cache["ax"].set_title(title)
        if cache["maps"]["note"]:
            say("Note: " + cache["maps"]["note"])
        show(cache["fig"])

    return live_rows(draw, [[box], [hint], [layer, head]])
