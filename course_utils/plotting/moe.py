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


def plot_loss_vs_flops(curves: dict, *, smooth: int = 20, ax=None, zoom_last: float = 0.4,
                       title: str = "equal active compute; band = min-max over seeds"):
    """Training loss against training FLOPs, one line per model with a band over seeds, and an inset zoomed on the
    last `zoom_last` of training (0: no inset).

    curves: name -> (flops per step, losses (seeds, steps)); losses are smoothed with a running mean over `smooth` steps.
    """
    import numpy as np

    if ax is None:
        fig, ax = new_figure(width=7.5, height=4.0)
    else:
        fig = ax.figure
    inset = ax.inset_axes([0.45, 0.35, 0.5, 0.35]) if zoom_last else None
    tail_low, tail_high = [], []
    for name, (flops_per_step, losses) in curves.items():
        losses = np.asarray(losses, dtype=float)  # (seeds, steps)
        kernel = np.ones(smooth) / smooth
        runs = np.stack([np.convolve(run, kernel, mode="valid") for run in losses])  # (seeds, steps - smooth + 1)
        x = flops_per_step * np.arange(smooth, losses.shape[1] + 1)
        mean = runs.mean(0)
        line, = ax.plot(x, mean, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(x, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2, lw=0)
        if inset is not None:
            tail = slice(int(len(x) * (1 - zoom_last)), None)
            inset.plot(x[tail], mean[tail], color=line.get_color(), lw=1)
            tail_low.append(mean[tail].min())
            tail_high.append(mean[tail].max())
    if inset is not None:
        inset.set_ylim(min(tail_low) - 0.01, max(tail_high) + 0.01)
        inset.set_title(f"last {zoom_last:.0%} of training, means", fontsize=7)
        inset.tick_params(labelsize=6)
    ax.set(xlabel="training FLOPs (6 x active parameters x tokens)",
           ylabel=f"train cross-entropy, nats (mean of {smooth} steps)", title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 1.0))
    return fig, ax


def plot_routing_map(tokens: list[str], weights, *, ax=None, title: str = ""):
    """Heatmap of the router's mixing weight per (expert, token), a dot on every chosen expert: weights (T, E), zero
    where an expert was not chosen."""
    weights = torch.as_tensor(weights)
    if ax is None:
        fig, ax = new_figure(width=max(6.0, 0.28 * len(tokens)), height=2.8)
    else:
        fig = ax.figure
    im = ax.imshow(weights.t().numpy(), cmap="Purples", aspect="auto", vmin=0, vmax=1)
    chosen = torch.nonzero(weights > 0)  # (n, 2) token, expert
    ax.scatter(chosen[:, 0].numpy(), chosen[:, 1].numpy(), s=4, color="k", marker="o", label="chosen")
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
