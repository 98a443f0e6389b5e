"""Lecture 04: moe_explorer, the load per expert of a toy router under top-k, capacity and the aux loss."""

from __future__ import annotations

import ipywidgets as w

from .core import live_rows, say, show


def moe_explorer():
    """Sliders for top-k, capacity factor and the aux-loss coefficient: load per expert, kept and dropped, for a
    router trained on a toy objective where expert 0 is better on average (moe.router_tradeoff)."""

    from ..moe import router_tradeoff
    from ..plotting import plot_router_tradeoff

    top_k = w.IntSlider(value=2, min=1, max=4, description="top-k")
    capacity = w.FloatSlider(value=1.25, min=0.5, max=3.0, step=0.25, description="capacity factor",
                             style={"description_width": "initial"})
    aux = w.SelectionSlider(options=[0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], value=0.0, description="aux coef")

    def update():
        result = router_tradeoff(aux.value, top_k=top_k.value, capacity_factor=capacity.value)
        fig, ax = plot_router_tradeoff(result)
        ax.set_title(f"top-{top_k.value}, capacity factor {capacity.value:g}, aux coef {aux.value:g}", fontsize=10)
        show(fig)
        say(f"dropped {result['dropped']:.1%} of assignments;  aux loss {result['aux']:.2f} (even = {top_k.value});  "
            f"quality delivered {result['quality']:.2f} of the best experts'")

    return live_rows(update, [[top_k, aux], [capacity]])
