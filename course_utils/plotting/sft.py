"""Lecture 07 (SFT lab) plots: loss curves, accuracy per task family and per setting, attention masks."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_loss_curves(curves: dict, *, title: str = "training loss", smooth: int = 1):
    """One line per run: {name: [loss per step]}; `smooth` = moving-average window. Returns (fig, ax)."""
    fig, ax = new_figure()
    for name, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        if smooth > 1 and len(ys) >= smooth:
            ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(len(ys)) + 1, ys, label=name)
    ax.set(xlabel="step", ylabel="loss (nats / token)", title=title, yscale="log")
    ax.legend()
    return fig, ax


def plot_loss_history(history: list[dict], *, title: str = "training loss", smooth: int = 3):
    """Rows of a training loop ({"step", "loss", ...}: train.train's callback) -> plot_loss_curves of the loss, for
    plotting.live_history to redraw while the run goes: (fig, ax)."""
    return plot_loss_curves({"training loss": [row["loss"] for row in history]}, title=title, smooth=smooth)


def plot_family_accuracy(results: dict):
    """Grouped bars: {run name: {family: accuracy}}. Returns (fig, ax)."""
    fig, ax = new_figure(width=7)
    families = list(next(iter(results.values())))
    width = 0.8 / len(results)
    for i, (name, acc) in enumerate(results.items()):
        ax.bar(np.arange(len(families)) + i * width, [acc.get(f, 0.0) for f in families], width, label=name)
    ax.set_xticks(np.arange(len(families)) + 0.4 - width / 2, families)
    ax.set(ylabel="exact match", ylim=(0, 1.05), title="test accuracy per task family")
    ax.legend(fontsize=8)
    return fig, ax


def plot_attention_mask(mask, *, title: str = "may attend (True)"):
    """A (T, T) boolean mask as an image (query rows, key columns). Returns (fig, ax)."""
    fig, ax = new_figure(width=4, height=4)
    ax.imshow(mask, cmap="Blues", interpolation="nearest")
    ax.set(xlabel="key position", ylabel="query position", title=title)
    return fig, ax


def plot_accuracy_curves(curves: dict, *, xlabel: str, ylabel: str = "accuracy", title: str = ""):
    """Mean over seeds as a line, each seed as a dot: {label: {x: [accuracy of each seed]}}. Returns (fig, ax)."""
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict {label: {x: [accuracy per seed]}}")
    fig, ax = new_figure(width=7)
    for j, (name, points) in enumerate(curves.items()):
        xs = sorted(points)
        shift = 0.04 * (j - (len(curves) - 1) / 2)  # side by side, so that equal values stay visible
        line, = ax.plot([x + shift for x in xs], [float(np.mean(points[x])) for x in xs], "-", label=name)
        for x in xs:
            ax.plot([x + shift] * len(points[x]), points[x], "o", ms=4, color=line.get_color())
    ticks = sorted({x for points in curves.values() for x in points})
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-0.03, 1.03))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig, ax
