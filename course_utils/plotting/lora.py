"""Lecture 06 (LoRA, QLoRA, memory) plots: memory breakdown bars, LoRA rank and scaling, PEFT methods, quantization error."""

from __future__ import annotations

import textwrap

from .figure import new_figure


_MEMORY_PARTS = ("params", "grads", "optimizer", "activations", "overhead")


def plot_memory_breakdown(breakdowns: dict, *, gpu_lines: dict | None = None, title: str = "", ax=None):
    """Stacked bars (GB) of MemoryBreakdown components, one bar per label, with each bar's peak as a black tick
    (the parts never all coexist, so the peak is below the top of the stack); optional GPU-size lines
    ({name: GB}; GPUs of the same size share one line and label)."""
    if not isinstance(breakdowns, dict) or not breakdowns:
        raise ValueError("breakdowns must be a non-empty dict {label: MemoryBreakdown}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=max(5.0, 1.3 * len(breakdowns) + 3))
    labels = list(breakdowns)
    bottom = [0.0] * len(labels)
    for part in _MEMORY_PARTS:
        vals = [getattr(breakdowns[k], part) / 1e9 for k in labels]
        ax.bar(labels, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    peaks = [(i, breakdowns[k].peak / 1e9) for i, k in enumerate(labels) if breakdowns[k].peak is not None]
    for j, (i, gb) in enumerate(peaks):
        ax.hlines(gb, i - 0.45, i + 0.45, colors="k", lw=1.2, label="peak" if j == 0 else None)
        ax.text(i, gb, f"peak {gb:.1f}", ha="center", va="bottom", fontsize=8)
    lines: dict[float, str] = {}  # one line per size, its GPUs named together ("A100 80 GB / H100 80 GB")
    for name, gb in (gpu_lines or {}).items():
        lines[gb] = f"{lines[gb]} / {name}" if gb in lines else name
    for gb in lines:
        ax.axhline(gb, ls="--", lw=0.8, color="gray")
    ax.set_ylabel("GB (1e9 bytes)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)  # under the axes, never on a bar
    fig.tight_layout()
    low, high = ax.get_ylim()
    gap = 1.4 * 7 / 72 * fig.dpi / ax.get_window_extent().height * (high - low)  # one 7-pt line of text, in GB
    last = -float("inf")
    for gb in sorted(lines):  # labels at least one text line apart, so near sizes stay readable
        y = max(gb, last + gap)
        # x in axes units: just right of the plot, where no bar is; y in GB
        ax.text(1.01, y, lines[gb], transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=7,
                color="dimgray")
        last = y
    return fig, ax


def plot_rank_scaling(results: dict):
    """Two panels against the LoRA rank r: held-out loss, and the size of the learned update.

    results: {scaling label: {r: (held-out loss, ||ΔW||_F / ||W0||_F)}}.
    """
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {scaling: {rank: (loss, relative update)}}")
    fig, axes = new_figure(ncols=2, width=5.5)
    for label, by_rank in results.items():
        ranks = sorted(by_rank)
        for ax, j in zip(axes, (0, 1)):
            ax.plot(ranks, [by_rank[r][j] for r in ranks], "o-", label=label)
    all_ranks = sorted({r for by_rank in results.values() for r in by_rank})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ranks, [str(r) for r in all_ranks])
        ax.set_xlabel("LoRA rank r")
    axes[0].set(ylabel="nats/token", title="held-out loss after training")
    axes[1].set(ylabel="||ΔW|| / ||W0|| (mean over layers)", title="how far the weights moved")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig, axes


def plot_peft_methods(rows: list[dict], *, ax=None):
    """Held-out accuracy ± 2 SE per PEFT method, its trainable-parameter count under each bar.

    rows: [{"method", "accuracy", "accuracy_se", "trainable"}], one per method (e.g. means over seeds); an
    optional "seeds" list adds each seed's accuracy as a dot.
    """
    if not rows:
        raise ValueError("rows must be a non-empty list of {method, accuracy, accuracy_se, trainable}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=9)
    x = range(len(rows))
    ax.bar(x, [r["accuracy"] for r in rows], yerr=[2 * r["accuracy_se"] for r in rows], capsize=4, color="tab:blue",
           label="mean ± 2 SE")
    for i, r in enumerate(rows):
        if r.get("seeds"):
            ax.plot([i] * len(r["seeds"]), r["seeds"], "k.", label="one seed" if i == 0 else None)
    ax.set_xticks(list(x), [textwrap.fill(r["method"], 14) + f"\n{r['trainable']:,} params" for r in rows], fontsize=8)
    ax.legend(fontsize=8)
    ax.set_ylabel("held-out exact match (± 2 SE)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
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
