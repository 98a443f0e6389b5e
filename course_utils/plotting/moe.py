"""Lecture 04 (Mixture-of-Experts) plots: expert shares over training, drops vs capacity, loss vs FLOPs, routing map."""

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


def plot_loss_vs_flops(curves: dict, *, smooth: int = 20, ax=None, title: str = "training loss at equal active compute"):
    """Training loss against training FLOPs, one line per model with a band over seeds.

    curves: name -> (flops per step, losses (seeds, steps)); losses are smoothed with a running mean over `smooth` steps.
    """
    import numpy as np

    if ax is None:
        fig, ax = new_figure(width=6.0, height=3.6)
    else:
        fig = ax.figure
    for name, (flops_per_step, losses) in curves.items():
        losses = np.asarray(losses, dtype=float)  # (seeds, steps)
        kernel = np.ones(smooth) / smooth
        runs = np.stack([np.convolve(run, kernel, mode="valid") for run in losses])  # (seeds, steps - smooth + 1)
        x = flops_per_step * np.arange(smooth, losses.shape[1] + 1)
        mean = runs.mean(0)
        line, = ax.plot(x, mean, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(x, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xlabel="training FLOPs (6 x active parameters x tokens)", ylabel=f"train cross-entropy (mean of {smooth} steps)",
           title=title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_routing_map(tokens: list[str], weights, *, ax=None, title: str = ""):
    """Heatmap of the router's mixing weight per (expert, token): weights (T, E), zero where an expert was not chosen."""
    weights = torch.as_tensor(weights)
    if ax is None:
        fig, ax = new_figure(width=max(6.0, 0.28 * len(tokens)), height=2.8)
    else:
        fig = ax.figure
    im = ax.imshow(weights.t().numpy(), cmap="Purples", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(weights.shape[1]))
    ax.set(xlabel="token", ylabel="expert", title=title)
    fig.colorbar(im, ax=ax, label="mixing weight", fraction=0.03, pad=0.01)
    return fig, ax


def plot_router_tradeoff(result: dict, *, ax=None):
    """Load per expert (kept and dropped assignments) against the capacity line, from moe.router_tradeoff."""
    index, keep = result["index"], result["keep"]  # (N, k)
    n_experts = len(result["share"])
    kept = torch.bincount(index[keep], minlength=n_experts)
    dropped = torch.bincount(index[~keep], minlength=n_experts)
    if ax is None:
        fig, ax = new_figure(width=5.5, height=3.2)
    else:
        fig = ax.figure
    ax.bar(range(n_experts), kept.numpy(), label="kept", color="tab:blue")
    ax.bar(range(n_experts), dropped.numpy(), bottom=kept.numpy(), label="dropped (over capacity)", color="tab:red")
    ax.axhline(result["capacity"], color="k", ls="--", lw=1, label=f"capacity = {result['capacity']} slots")
    ax.axhline(index.numel() / n_experts, color="gray", ls=":", lw=1, label="even load")
    ax.set(xlabel="expert", ylabel="assignments", xticks=range(n_experts))
    ax.legend(fontsize=8, loc="upper right")
    return fig, ax
