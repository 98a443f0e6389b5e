"""Lecture 11 (quantization and distillation) plots: rounding error against bits, one row's grid, activation outliers
per channel, the quantized-model table (accuracy and perplexity against bits), forward vs reverse KL fits, the
distillation table."""

from __future__ import annotations

import numpy as np

from .figure import legend_below, new_figure


def plot_error_vs_bits(rows: list, *, title: str = ""):
    """rows: dicts with "scheme", "bits", "error" (relative Frobenius error of a weight matrix); one line per scheme."""
    if not rows:
        raise ValueError("rows must be a non-empty list of {'scheme', 'bits', 'error'} dicts")
    fig, ax = new_figure(width=5.5, height=3.6)
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        pts = sorted((r["bits"], r["error"]) for r in rows if r["scheme"] == scheme)
        ax.plot(*zip(*pts), "o-", ms=4, label=scheme)
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("relative error ||W − Ŵ|| / ||W||")
    ax.set_xticks(sorted({r["bits"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "round-to-nearest error against bits", fontsize=9)
    return fig, ax


def plot_weight_grid(w_row, w_hat_row, *, title: str = ""):
    """One weight row: a histogram of its float values and the grid values its quantized copy uses (vertical lines)."""
    w_row = np.asarray(w_row, dtype=float)
    fig, ax = new_figure(width=6.0, height=3.0)
    ax.hist(w_row, bins=60, histtype="stepfilled", color="0.6",  # one polygon: 60 bars took a third of a redraw
            label="float weights of the row")
    levels = _grid_values(w_hat_row)
    ax.vlines(levels, 0, 1, transform=ax.get_xaxis_transform(), color="C3", lw=1, alpha=0.8,
              label="values after quantization")  # one collection: 256 axvlines took half a redraw at 8 bits
    ax.set_xlabel("weight value")
    ax.set_ylabel("weights in the row")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or _grid_title(levels), fontsize=9)
    return fig, ax


def redraw_weight_grid(ax, w_hat_row, *, title: str = "") -> None:
    """Move the grid lines that plot_weight_grid drew on `ax` to another quantized copy of the same row, in place (a
    widget's redraw without a new figure, histogram and ticks)."""
    levels = _grid_values(w_hat_row)
    ax.collections[0].set_segments([[(x, 0), (x, 1)] for x in levels])
    ax.relim()  # the histogram; a collection's extent is not counted, so the lines' is added as vlines adds it
    ax.update_datalim([(levels.min(), 0), (levels.max(), 0)], updatey=False)
    ax.autoscale_view()
    ax.set_title(title or _grid_title(levels), fontsize=9)


def _grid_title(levels) -> str:
    return f"{len(levels)} distinct values after quantization"


def _grid_values(w_hat_row) -> np.ndarray:
    """The distinct values of a quantized row (rounded to 1e-8: float noise is not a grid value)."""
    return np.unique(np.round(np.asarray(w_hat_row, dtype=float), 8))


def plot_channel_absmax(absmax: dict, *, title: str = ""):
    """absmax: {layer name: (in,) max |x| per input channel}; channels sorted by size, log scale, one line per layer."""
    if not absmax:
        raise ValueError("absmax must be a non-empty {layer name: tensor} dict")
    fig, ax = new_figure(width=6.0, height=3.6)
    for name, values in absmax.items():
        v = np.sort(np.asarray(values, dtype=float))[::-1]
        ax.plot(np.arange(1, len(v) + 1), v, lw=1.5, label=f"{name} (max/median {v[0] / np.median(v):.1f}x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input channel, sorted by its largest |activation|")
    ax.set_ylabel("max |activation| over calibration tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "activation outliers per input channel", fontsize=9)
    return fig, ax


def plot_quant_table(rows: list, baseline: dict, *, title: str = ""):
    """rows: dicts with "method", "bits", "accuracy", "accuracy_se", "nll_change", "nll_change_se";
    baseline: {"accuracy": ...} of the float model. Left: accuracy ± 1.96 SE; right: change in reply NLL ± 1.96 SE."""
    if not rows:
        raise ValueError("rows must be a non-empty list of quantization results")
    fig, axes = new_figure(1, 2, width=4.2, height=3.6)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for k, method in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["bits"])
        bits = np.array([r["bits"] for r in pts]) + 0.12 * (k - (len(methods) - 1) / 2)
        for ax, key in ((axes[0], "accuracy"), (axes[1], "nll_change")):
            ax.errorbar(bits, [r[key] for r in pts], yerr=[1.96 * r[f"{key}_se"] for r in pts], fmt="o-", ms=4,
                        capsize=2, label=method)
    axes[0].axhline(baseline["accuracy"], color="k", ls="--", lw=1, label="float model")
    axes[1].axhline(0, color="k", ls="--", lw=1)
    axes[1].set_yscale("symlog", linthresh=0.01)
    top = max(r["nll_change"] + 1.96 * r["nll_change_se"] for r in rows)
    bottom = min(r["nll_change"] - 1.96 * r["nll_change_se"] for r in rows)
    axes[1].set_ylim(min(bottom * 1.5, -0.01), top * 2)
    for ax, label in ((axes[0], "held-out accuracy (exact match)"), (axes[1], "change in reply NLL (nats/token)")):
        ax.set_xlabel("bits per weight")
        ax.set_ylabel(label)
        ax.set_xticks(sorted({r["bits"] for r in rows}))
        ax.grid(alpha=0.3)
    legend_below(fig, axes[0], title or "quantized course-tiny-sft (bars: 95 %)")
    return fig, axes


def plot_kl_fits(bins, teacher, fits: dict, *, title: str = ""):
    """A bimodal teacher distribution over `bins` and the one-bump students fitted to it: {label: probabilities}."""
    fig, ax = new_figure(width=5.5, height=3.4)
    ax.bar(bins, teacher, width=0.9, color="0.8", label="teacher p")
    for (label, probs), style in zip(fits.items(), ("-", "--", ":", "-.")):
        ax.plot(bins, probs, style, marker="o", ms=3, lw=2, label=label)
    ax.set_xlabel("token id (a toy vocabulary)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    ax.set_title(title or "one bump fitted to two: forward KL covers both, reverse KL picks one", fontsize=9)
    return fig, ax


def plot_distill(rows: list, teacher: float, init: float, *, title: str = ""):
    """rows: dicts with "method", "accuracy" (mean over seeds), "half_width" (of its 95 % t interval,
    stats.seed_interval), "seeds" (per-seed accuracies): bars with intervals, the seeds as dots, the teacher and the untrained student as
    lines."""
    if not rows:
        raise ValueError("rows must be a non-empty list of distillation results")
    fig, ax = new_figure(width=6.5, height=3.6)
    x = np.arange(len(rows))
    ax.bar(x, [r["accuracy"] for r in rows], yerr=[r["half_width"] for r in rows], capsize=3, color="C0", alpha=0.5,
           ecolor="0.3")
    for i, r in enumerate(rows):
        ax.plot(i + np.linspace(-0.15, 0.15, len(r["seeds"])), r["seeds"], "o", color="k", ms=4, label=None)
    ax.axhline(teacher, color="C3", ls="--", lw=1, label=f"teacher (4 layers) {teacher:.3f}")
    ax.axhline(init, color="0.4", ls=":", lw=1, label=f"student before training {init:.3f}")
    ax.set_xticks(x, [r["method"] for r in rows], fontsize=8)
    ax.set_ylabel("held-out accuracy (mean of seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_title(title or "3-layer student, same budget (bars: 95 % t interval over seeds; dots: the seeds)",
                 fontsize=9)
    return fig, ax
