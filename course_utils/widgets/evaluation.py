"""Lecture 12: eval_size_explorer, how many problems an evaluation needs to show a gain, paired and unpaired."""

from __future__ import annotations

import ipywidgets as w

from .core import live_rows, say, show


def eval_size_report(n: int, p: float, gain: float, discordance: float) -> dict:
    """The numbers eval_size_explorer shows: SE and power of each design, and the problems 80 % power needs."""
    from .. import stats

    designs = {"paired": dict(discordance=discordance), "unpaired": dict(p=p)}
    return {name: {"se": stats.gain_se(n, gain, **kw),
                   "power": stats.detection_power(n, gain, **kw),
                   "needed": stats.problems_needed(gain, **kw)} for name, kw in designs.items()}


def eval_size_explorer():
    """Problems, accuracy, gain and discordance: how often an evaluation shows the gain at 2 SE, paired (both
    models on the same problems) and unpaired, with the sampling distribution of the measured gain."""

    from ..plotting import plot_gain_distribution

    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"))
    n = w.IntSlider(value=500, min=50, max=20000, step=50, description="problems per model", **wide)
    p = w.FloatSlider(value=0.6, min=0.05, max=0.9, step=0.01, description="weaker model's accuracy", **wide)
    gain = w.FloatSlider(value=0.03, min=0.005, max=0.1, step=0.001, readout_format=".3f", description="true gain",
                         **wide)
    disc = w.FloatSlider(value=0.1, min=0.005, max=0.5, step=0.001, readout_format=".3f",
                         description="discordance (paired)", **wide)

    def update():
        if disc.value < gain.value:
            say(f"discordance ({disc.value:.2f}) must be at least the gain ({gain.value:.3f}): a gain needs "
                f"problems where the models disagree")
            return
        report = eval_size_report(n.value, p.value, gain.value, disc.value)
        for name, r in report.items():
            print(f"{name:9s} SE {r['se']:.4f}  power at n = {n.value}: {r['power']:.2f}  "
                  f"problems for 80 % power: {r['needed']}")
        fig, _ = plot_gain_distribution(gain.value, {k: r["se"] for k, r in report.items()})
        show(fig)

    return live_rows(update, [[n, gain], [p, disc]])
