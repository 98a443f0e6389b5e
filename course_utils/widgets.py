"""Interactive widgets for class demos. Each is a thin shell over pure functions the tests call directly;
a widget catches errors from its callbacks and shows them as a message, so it cannot crash the kernel."""

from __future__ import annotations

from typing import Callable


def safe_callback(output, fn: Callable) -> Callable:
    """Wrap a widget callback: run `fn` inside `output` (an ipywidgets.Output), showing any error as text."""
    def wrapped(*args, **kwargs):
        output.clear_output(wait=True)
        with output:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # shown to the user; the kernel keeps running
                print(f"Could not update: {type(exc).__name__}: {exc}")
    return wrapped


# ---- 01 attention_explorer (issue 3) ----

def attention_explorer(model, tokenizer, text: str = "Once upon a time, there was a blue fox named Rosa.",
                       *, max_tokens: int = 48):
    """Text box + layer/head sliders: the attention heatmap of one head and the layers × heads entropy grid.

    The model must return attention weights (load it with attn_implementation="eager"). Inputs longer than
    max_tokens are truncated with a note; a bad input shows a message instead of raising.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .attention import attention_maps
    from .plotting import new_figure, plot_attention_weights, plot_entropy_grid

    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    box = W.Text(value=text, description="text", layout=W.Layout(width="90%"), continuous_update=False)
    layer = W.IntSlider(value=0, min=0, max=n_layers - 1, description="layer")
    head = W.IntSlider(value=0, min=0, max=n_heads - 1, description="head")
    out = W.Output()
    cache = {}

    def draw(*_):
        if cache.get("text") != box.value:
            cache.update(text=box.value, maps=attention_maps(model, tokenizer, box.value, max_tokens=max_tokens))
        maps = cache["maps"]
        if maps["note"]:
            print("Note:", maps["note"])
        fig, axes = new_figure(1, 2, width=5.5, height=4.5)
        plot_attention_weights(maps["weights"][layer.value, head.value], maps["tokens"], maps["tokens"], ax=axes[0],
                               title=f"layer {layer.value}, head {head.value}")
        plot_entropy_grid(maps["entropy"], uniform=maps["uniform_entropy"], ax=axes[1], title="mean entropy")
        plt.show()
        plt.close(fig)

    callback = safe_callback(out, draw)
    for w in (box, layer, head):
        w.observe(callback, names="value")
    callback()
    return W.VBox([box, W.HBox([layer, head]), out])


# ---- 05 decoding_explorer (issue 6) ----

# ---- 06 memory_explorer (issue 7) ----
