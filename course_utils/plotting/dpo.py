"""Lecture 08 (DPO lab) plots: preference-training metrics per run."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_preference_runs(runs: dict, keys: tuple[str, ...] = ("loss", "acc", "margin", "logp_chosen", "logp_rejected"),
                         smooth: int = 5):
    """One panel per metric, one line per run; runs maps a name to a train.TrainResult (losses + metrics)."""
    fig, axes = new_figure(1, len(keys), width=3.2, height=2.8)
    axes = np.atleast_1d(axes)
    for name, res in runs.items():
        for ax, key in zip(axes, keys):
            ys = np.array(res.losses if key == "loss" else [m.get(key, np.nan) for m in res.metrics], dtype=float)
            if smooth > 1 and len(ys) >= smooth:
                ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.arange(len(ys)) + (smooth - 1 if len(ys) < len(res.losses) else 0), ys, label=name)
    for ax, key in zip(axes, keys):
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig, axes
