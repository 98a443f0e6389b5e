"""Lecture 03: rope_explorer, RoPE's wavelengths and decay bound under a base, a scaling method and a context."""

from __future__ import annotations

import ipywidgets as w

from ..checks import check_int
from .core import live_rows, say, show


def rope_explorer(head_dim: int = 64):
    """Sliders for RoPE's base, a scaling method and factor, and the context: each pair's wavelength against the
    context, and RoPE's long-term decay bound vs distance, plain next to scaled."""

    from ..plotting import (new_figure, plot_rope_wavelengths, plot_score_bound, redraw_rope_wavelengths,
                            redraw_score_bound)
    from ..positional import rope_inv_freq, rope_score_bound, rope_wavelengths

    check_int("head_dim", head_dim, 2)
    base = w.FloatLogSlider(value=10000.0, base=10, min=1, max=7, step=0.1, description="base")
    method = w.Dropdown(options=["linear", "ntk", "yarn", "llama3"], value="yarn", description="scaling")
    factor = w.FloatLogSlider(value=8.0, base=2, min=0, max=6, step=0.5, description="factor s")
    context = w.SelectionSlider(options=[64, 256, 1024, 4096, 32768], value=256, description="trained L")

    drawn = {}  # the figure of the first update; later ones move its lines and relabel them in place

    def update():
        scaling = {"rope_type": method.value, "factor": float(factor.value)}
        if method.value in ("yarn", "llama3"):
            scaling["original_max_position_embeddings"] = context.value
        if method.value == "llama3":
            scaling.update(low_freq_factor=1.0, high_freq_factor=4.0)
        plain, _ = rope_inv_freq(head_dim, base.value)
        scaled, attention_factor = rope_inv_freq(head_dim, base.value, scaling)
        label, reach = f"{method.value} s={factor.value:g}", int(context.value * factor.value)
        wavelengths = {"plain RoPE": rope_wavelengths(plain), label: rope_wavelengths(scaled)}
        bounds = {"plain": rope_score_bound(head_dim, base.value, 4 * reach),
                  label: rope_score_bound(head_dim, base.value, 4 * reach, scaling)}
        if not drawn:
            fig, (top, bottom) = new_figure(2, 1, width=6.0, height=3.4)  # one figure: laid out, drawn, sent once
            plot_rope_wavelengths(wavelengths["plain RoPE"], context.value, {label: wavelengths[label]}, ax=top)
            plot_score_bound(bounds, reach, ax=bottom)
            for ax in (top, bottom):
                ax.minorticks_off()  # on these many-decade log axes, minor ticks were half of each redraw's time
            drawn.update(fig=fig, top=top, bottom=bottom)
        else:
            redraw_rope_wavelengths(drawn["top"], wavelengths["plain RoPE"], context.value, {label: wavelengths[label]})
            redraw_score_bound(drawn["bottom"], bounds, reach)
        show(drawn["fig"])  # new figures and new ticks were most of a redraw; moving lines is a third faster
        turning = (wavelengths["plain RoPE"] <= context.value).sum().item()
        say(f"pairs that turn fully within L = {context.value}: {turning} of {head_dim // 2}; "
            f"attention factor {attention_factor:.3f}")

    return live_rows(update, [[base, method], [factor, context]])
