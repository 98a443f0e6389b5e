"""Lecture 05 (decoding) plots: next-token bars before/after filtering, repetition table, accuracy vs N."""

from __future__ import annotations

import torch

from .figure import new_figure


def plot_next_token_filter(view: dict, tokenizer, top: int = 15, ax=None):
    """Bars of the `top` most likely next tokens before (grey) and after (colour) filtering; view from filter_view.
    Given `ax`, the caller lays the figure out."""
    labels, before, after = _filter_bars(view, tokenizer, top)
    made = ax is None
    fig, ax = new_figure(width=7.0, height=3.2) if made else (ax.figure, ax)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], before, width=0.4, color="0.7", label="before")
    ax.bar([x + 0.2 for x in xs], after, width=0.4, color="C0", label="after penalty, temperature and filters")
    ax.set_xticks(list(xs), labels, rotation=60, fontsize=8)
    ax.set_xlabel(f"next token (the {len(labels)} likeliest before filtering)")
    ax.set_ylabel("probability")
    ax.set_title(_filter_title(view), fontsize=9)
    ax.legend(fontsize=8)
    if made:
        fig.tight_layout()
    return fig, ax


def redraw_next_token_filter(ax, view: dict, tokenizer, top: int = 15) -> None:
    """Set the bars, token labels and title that plot_next_token_filter drew on `ax` (same `top`) to a new `view`:
    a widget's redraw without new axes, bars and ticks."""
    labels, before, after = _filter_bars(view, tokenizer, top)
    for bars, heights in zip(ax.containers, (before, after)):
        if len(bars) != len(heights):
            raise ValueError(f"ax holds {len(bars)} bars per group, the view {len(heights)}: draw it anew")
        for bar, height in zip(bars, heights):
            bar.set_height(height)
    if [t.get_text() for t in ax.get_xticklabels()] != labels:
        ax.set_xticklabels(labels)
    ax.set_title(_filter_title(view), fontsize=9)
    ax.relim()
    ax.autoscale_view()


def _filter_bars(view: dict, tokenizer, top: int) -> tuple[list[str], list[float], list[float]]:
    """The `top` likeliest tokens' labels and their probabilities before and after filtering."""
    before, after = view["probs_before"], view["probs_after"]
    idx = torch.topk(before, max(1, min(int(top), before.numel()))).indices
    labels = [repr(tokenizer.decode([int(i)]))[1:-1] or "·" for i in idx]
    return labels, before[idx].tolist(), after[idx].tolist()


def _filter_title(view: dict) -> str:
    n = view["n_kept"]
    entropy = [max(0.0, view[k]) for k in ("entropy_before", "entropy_after")]  # no "-0.00" from rounding
    return (f"kept {n} token{'s' if n != 1 else ''} ({view['mass_kept']:.1%} of the mass before filtering); "
            f"entropy {entropy[0]:.2f} -> {entropy[1]:.2f} nats")


def plot_repetition_table(rows: dict, metrics=("rep-4", "distinct-2", "loops")):
    """Grouped horizontal bars: one group per strategy (rows: name -> metric dict), one bar per metric."""
    names = list(rows)
    fig, ax = new_figure(width=7.0, height=0.35 * len(names) + 1.2)
    height = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        ax.barh([i + j * height for i in range(len(names))], [rows[n][metric] for n in names], height=height,
                label=metric)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig, ax


def plot_accuracy_vs_n(ns, curves: dict):
    """Accuracy against the number of samples N, one line per selection rule (curves: name -> list of accuracies)."""
    fig, ax = new_figure(width=5.5, height=3.2)
    for name, accs in curves.items():
        ax.plot(list(ns), accs, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N samples per question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_repetition_vs_likelihood(per_prompt: dict, *, ax=None):
    """Holtzman's trade-off: mean rep-4 (x) against the model's mean log p / token (y) per strategy, with SE bars.

    per_prompt: strategy -> {"rep-4": [...], "logp/tok": [...]}, one value per prompt.
    """
    import numpy as np

    fig, ax = new_figure(width=6.0, height=4.0) if ax is None else (ax.figure, ax)
    for i, (name, v) in enumerate(per_prompt.items()):
        rep, lp = np.asarray(v["rep-4"]), np.asarray(v["logp/tok"])
        se = lambda a: a.std(ddof=1) / np.sqrt(len(a))
        ax.errorbar(rep.mean(), lp.mean(), xerr=se(rep), yerr=se(lp), fmt="o", capsize=3, label=name)
        ax.annotate(name, (rep.mean(), lp.mean()), xytext=(5, -10 + 7 * (i % 4)), textcoords="offset points", fontsize=6)
    ax.set(xlabel="seq-rep-4 (more repetitive ->)", ylabel="model log p / token (more likely ->)",
           title="repetition vs likelihood, mean ± SE over prompts")
    ax.legend(fontsize=7, loc="best")
    return fig, ax
