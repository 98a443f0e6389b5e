"""Lecture 04 (Mixture-of-Experts) plots: each expert's share over training, dropped tokens vs capacity."""

from __future__ import annotations

import torch

from .figure import new_figure


def plot_expert_share(steps, share, *, layer: int = 0, ax=None, title: str = ""):
    """Stacked area of each expert's share of assignments over training. share (S, n_layers, E) or (S, E)."""
    share = torch.as_tensor(share)
    if share.dim() == 3:
        share = share[:, layer]  # (S, E)
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.2)
    else:
        fig = ax.figure
    ax.stackplot(list(steps), share.t().numpy(), labels=[f"expert {e}" for e in range(share.shape[1])])
    ax.set(xlabel="training step", ylabel="share of assignments (stacked)", ylim=(0, 1), title=title)
    return fig, ax


def plot_drop_vs_capacity(capacity_factors, drops: dict, ax=None):
    """Fraction of dropped assignments vs capacity factor, one line per router (drops: name -> list of floats)."""
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.2)
    else:
        fig = ax.figure
    for name, values in drops.items():
        ax.plot(list(capacity_factors), list(values), marker="o", label=name)
    ax.set(xlabel="capacity factor", ylabel="share of top-k assignments dropped", ylim=(-0.02, 1),
           title="dropped assignments vs expert capacity")
    ax.legend(fontsize=8)
    return fig, ax
