"""Lecture 02: norm_explorer, the per-block gradient norms at initialization for each norm placement and depth."""

from __future__ import annotations

import ipywidgets as w

from .core import live_rows, say, show

def norm_explorer(rows, vocab_size: int, *, depths=(3, 6, 12, 24, 48), embed_stds=(0.02, 1.0), seed: int = 0):
    """Depth, embedding initialization and placements: each block's gradient norm on one batch of text at
    initialization (norms.grad_norms_at_init), one line per placement, and its last/first ratio.

    rows: (B, T) token ids, one batch. Every setting is computed once when the widget is built (seconds), so moving a
    control only redraws. It opens at 24 blocks where `depths` has them.
    """
    from ..norms import NORM_POSITIONS, grad_norms_at_init
    from ..plotting import plot_grad_norms

    grads = {(n, std, pos): grad_norms_at_init(pos, n, rows, vocab_size, seed=seed, embed_std=std)
             for n in depths for std in embed_stds for pos in NORM_POSITIONS}
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"))  # labels never cut
    depth = w.SelectionSlider(options=list(depths), value=24 if 24 in depths else depths[len(depths) // 2],
                              description="blocks", **wide)
    std = w.ToggleButtons(options=list(embed_stds), value=embed_stds[0], description="embedding init std",
                          style={"description_width": "initial", "button_width": "60px"})
    shown = {pos: w.Checkbox(value=True, description=pos, indent=False, layout=w.Layout(width="110px"))
             for pos in NORM_POSITIONS}

    def update():
        chosen = [pos for pos, box in shown.items() if box.value]
        if not chosen:
            say("Tick at least one placement to draw.")
            return
        by_pos = {pos: grads[depth.value, std.value, pos] for pos in chosen}
        fig, _ = plot_grad_norms({depth.value: by_pos}, note=f"embeddings std {std.value:g}, seed {seed}")
        show(fig, layout=False)  # laid out by the plot
        say("last/first block gradient ratio: "
            + ";  ".join(f"{pos} {g[-1] / g[0]:.3g}" for pos, g in by_pos.items()))

    return live_rows(update, [[depth, std], list(shown.values())])
