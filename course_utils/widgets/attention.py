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
    from ..plotting import (LABELLED_TOKENS, new_figure, plot_attention_weights, plot_entropy_grid,
                            redraw_attention_weights, redraw_entropy_grid)

    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    check_int("max_tokens", max_tokens)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    box = w.Text(value=text, description="text", placeholder="type, then press Enter",
                 layout=w.Layout(width="95%", min_width="300px"))  # sent on Enter (live_rows)
    hint = w.HTML("<small>Press Enter to redraw after editing the text. "
                  "'�' in a label is part of a character the byte-level tokenizer split over several tokens.</small>")
    layer = w.IntSlider(value=0, min=0, max=n_layers - 1, description="layer", layout=w.Layout(min_width="260px"))
    head = w.IntSlider(value=0, min=0, max=n_heads - 1, description="head", layout=w.Layout(min_width="260px"))
    drawn = {}  # the text's maps and the figure, redrawn in place while the heatmap's labels allow it

    def draw():
        if not box.value.strip():
            say("Type some text (not only spaces), then press Enter.")
            return
        title = f"layer {layer.value}, head {head.value}"
        if drawn.get("text") != box.value:
            maps = attention_maps(model, tokenizer, box.value, max_tokens=max_tokens)
            labelled = len(maps["tokens"]) <= LABELLED_TOKENS
            if drawn and drawn["labelled"] and labelled:  # new text, same figure: no axes, colour bars, ticks to make
                redraw_entropy_grid(drawn["grid"], maps["entropy"], uniform=maps["uniform_entropy"],
                                    title="mean entropy")
            else:
                fig, (heatmap, grid) = new_figure(1, 2, width=3.7, height=3.7)  # 740 px: legible at 1024 px
                plot_attention_weights(maps["weights"][layer.value, head.value], maps["tokens"], maps["tokens"],
                                       ax=heatmap, title=title)
                plot_entropy_grid(maps["entropy"], uniform=maps["uniform_entropy"], ax=grid, title="mean entropy")
                drawn.update(fig=fig, heatmap=heatmap, grid=grid)
            drawn.update(text=box.value, maps=maps, labelled=labelled)
        tokens = drawn["maps"]["tokens"]
        redraw_attention_weights(drawn["heatmap"], drawn["maps"]["weights"][layer.value, head.value], tokens, tokens,
                                 title=title)
        if drawn["maps"]["note"]:
            say("Note: " + drawn["maps"]["note"])
        show(drawn["fig"])

    return live_rows(draw, [[box], [hint], [layer, head]])
