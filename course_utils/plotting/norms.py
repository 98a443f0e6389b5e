"""Lecture 02 (norms) plots: which axes each norm uses, gradient norms per block, loss curves, activations."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..norms import NORM_POSITIONS
from .figure import new_figure


def plot_norm_axes(batch: int = 4, tokens: int = 5, features: int = 6):
    """Which entries of a (batch, tokens, features) tensor share one mean/variance, per norm: (fig, axes)."""
    fig, axes = new_figure(1, 3, width=3.6, height=3.2)
    rows = batch * tokens
    groups = {
        "BatchNorm: one feature,\nall batch x tokens": np.tile(np.arange(features), (rows, 1)),
        "LayerNorm: one token,\nall features": np.repeat(np.arange(rows)[:, None], features, 1),
        "RMSNorm: one token,\nall features (no mean)": np.repeat(np.arange(rows)[:, None], features, 1),
    }
    for ax, (title, g) in zip(axes, groups.items()):
        ax.imshow(g == g[0, 0], cmap="Blues", aspect="auto", vmin=0, vmax=1.3)
        for b in range(1, batch):
            ax.axhline(b * tokens - 0.5, color="k", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("feature")
        ax.set_ylabel("(sequence, token)")
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig, axes


def plot_grad_norms(results: dict, note: str = ""):
    """results {n_layers: {placement: per-block grad norms}} -> one log-scale panel per depth: (fig, axes).

    note: added to each panel's title (e.g. the initialization)."""
    fig, axes = new_figure(1, len(results), width=4.0, height=3.2)
    axes = [axes] if len(results) == 1 else list(axes)
    for ax, (n, by_pos) in zip(axes, results.items()):
        for pos, g in by_pos.items():  # one colour per placement in every plot
            colour = f"C{list(NORM_POSITIONS).index(pos)}"
            ax.plot(range(1, len(g) + 1), g, marker="o", ms=3, label=pos, color=colour)
        ax.set_yscale("log")
        low, high = ax.get_ylim()  # a panel spanning under two decades may hold no power of ten: label 1, 2, 5 too
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if high / low < 100 else (1,)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.2, 1, 2 rather than 2×10⁻¹
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{n} blocks at initialization" + (f"\n{note}" if note else ""), fontsize=10)
        ax.set_xlabel("block (1 = nearest the input)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("gradient norm of the block")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig, axes


def plot_norm_loss_curves(runs: dict, title: str = "training loss"):
    """runs {"placement, warm-up label": [per-step losses of each seed]} -> mean over seeds with a min-max band:
    colour = placement, dashed = no warm-up; NaN (diverged) steps leave a gap. (fig, ax)"""
    fig, ax = new_figure(width=7.0, height=3.8)
    placements = list(dict.fromkeys(label.split(",")[0] for label in runs))
    for label, seeds in runs.items():
        curves = np.array(seeds, dtype=float)  # (n_seeds, steps)
        steps = np.arange(1, curves.shape[1] + 1)
        colour = f"C{placements.index(label.split(',')[0])}"
        ax.plot(steps, curves.mean(0), color=colour, ls="--" if "no warm" in label else "-",
                label=f"{label} (mean of {len(curves)} seeds)")
        ax.fill_between(steps, curves.min(0), curves.max(0), color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(title + " — band: min to max over seeds")
    ax.legend(fontsize=7)
    return fig, ax


def plot_activations(x, curves: dict):
    """curves {name: (f(x), f'(x))} -> two panels, values and derivatives: (fig, axes)."""
    fig, axes = new_figure(1, 2, width=5.0, height=3.5)
    for name, (y, dy) in curves.items():
        axes[0].plot(x, y, label=name)
        axes[1].plot(x, dy, label=name)
    axes[0].set_title("f(x)")
    axes[1].set_title("f'(x)")
    for ax in axes:
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xlabel("x")
    axes[0].set_ylim(-1.5, 3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig, axes
