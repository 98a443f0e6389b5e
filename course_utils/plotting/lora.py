"""Lecture 06 (LoRA, QLoRA, memory) plots: memory breakdown bars, LoRA rank sweep, quantization error."""

from __future__ import annotations

from .figure import new_figure


_MEMORY_PARTS = ("params", "grads", "optimizer", "activations", "overhead")


def plot_memory_breakdown(breakdowns: dict, *, gpu_lines: dict | None = None, title: str = "", ax=None):
    """Stacked bars (GB) of MemoryBreakdown components, one bar per label; optional horizontal GPU-size lines."""
    if not isinstance(breakdowns, dict) or not breakdowns:
        raise ValueError("breakdowns must be a non-empty dict {label: MemoryBreakdown}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=max(5.0, 1.3 * len(breakdowns) + 3))
    labels = list(breakdowns)
    bottom = [0.0] * len(labels)
    for part in _MEMORY_PARTS:
        vals = [getattr(breakdowns[k], part) / 1e9 for k in labels]
        ax.bar(labels, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for name, gb in (gpu_lines or {}).items():
        ax.axhline(gb, ls="--", lw=0.8, color="gray")
        ax.text(len(labels) - 0.5, gb, f" {name}", va="bottom", ha="right", fontsize=7, color="gray")
    ax.set_ylabel("GB (1e9 bytes)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_rank_sweep(losses_by_rank: dict, *, ax=None):
    """Training-loss curves for each LoRA rank {r: [loss per step]}."""
    if not isinstance(losses_by_rank, dict) or not losses_by_rank:
        raise ValueError("losses_by_rank must be a non-empty dict {rank: list of losses}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure()
    for r, losses in losses_by_rank.items():
        ax.plot(range(1, len(losses) + 1), losses, label=f"r = {r}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend()
    return fig, ax


def plot_quant_error(errors: dict, *, ax=None):
    """Grouped bars of relative RMSE: {weights name: {format: error}}."""
    if not isinstance(errors, dict) or not errors:
        raise ValueError("errors must be a non-empty dict {weights name: {format: relative_rmse}}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure()
    groups = list(errors)
    kinds = list(next(iter(errors.values())))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        ax.bar([i + j * width for i in range(len(groups))], [errors[g][kind] for g in groups], width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.set_ylabel("relative RMSE of the round trip")
    ax.legend()
    return fig, ax
