"""Lecture 08 (DPO lab) plots: training-batch metrics, held-out accuracy during training, per-token log-prob changes
(likelihood displacement), the DPO family and the β sweep."""

from __future__ import annotations

import numpy as np

from .figure import new_figure

# metric key -> (panel title, y-axis label)
PREFERENCE_PANELS = {
    "loss": ("loss", "loss (log 2 = 0.693 at the start)"),
    "acc": ("reward accuracy", "fraction r(chosen) > r(rejected)"),
    "margin": ("reward margin", "r(chosen) − r(rejected), β·nats"),
    "logp_chosen": ("log p(chosen reply)", "nats, summed over the reply"),
    "logp_rejected": ("log p(rejected reply)", "nats, summed over the reply"),
    "kl": ("KL to the reference", "nats per token, on the batch's pairs"),
}


def plot_preference_runs(runs: dict, keys: tuple[str, ...] = ("loss", "acc", "margin", "logp_chosen", "logp_rejected"),
                         smooth: int = 5, what: str = "training batches"):
    """One panel per metric, one line per run; runs maps a name to a train.TrainResult (losses + metrics).

    Each step's value is measured on that step's batch; lines are a `smooth`-step moving average (said in the title).
    """
    unknown = [k for k in keys if k not in PREFERENCE_PANELS]
    if unknown:
        raise ValueError(f"keys must be among {list(PREFERENCE_PANELS)}, got {unknown}")
    fig, axes = new_figure(1, len(keys), width=3.2, height=2.9)
    axes = np.atleast_1d(axes)
    for name, res in runs.items():
        for ax, key in zip(axes, keys):
            ys = np.array(res.losses if key == "loss" else [m.get(key, np.nan) for m in res.metrics], dtype=float)
            xs = np.arange(1, len(ys) + 1)
            if smooth > 1 and len(ys) >= smooth:
                ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
                xs = xs[smooth - 1:]
            ax.plot(xs, ys, label=name)
    for ax, key in zip(axes, keys):
        ax.set_title(PREFERENCE_PANELS[key][0], fontsize=9)
        ax.set_ylabel(PREFERENCE_PANELS[key][1], fontsize=8)
        ax.set_xlabel("optimizer step")
    axes[0].legend(fontsize=7)
    smoothing = f"{smooth}-step moving average" if smooth > 1 else "no smoothing"
    fig.suptitle(f"{what}: per-batch values, {smoothing}", fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_accuracy_during_training(curves: dict[str, dict[int, list[int]]], *, baseline: float | None = None,
                                  title: str = "", ylabel: str = "held-out exact match"):
    """Accuracy on a fixed held-out set against the step: curves {label: {step: [0/1 per problem]}}, 95 % bands
    (normal approximation, ±1.96·SE); `baseline` (e.g. the start) as a dashed line."""
    fig, ax = new_figure(width=6.4, height=3.6)
    for label, curve in curves.items():
        steps = sorted(curve)
        acc = np.array([np.mean(curve[s]) for s in steps])
        se = np.array([np.sqrt(a * (1 - a) / len(curve[s])) for a, s in zip(acc, steps)])
        line, = ax.plot(steps, acc, marker="o", label=label)
        ax.fill_between(steps, acc - 1.96 * se, acc + 1.96 * se, color=line.get_color(), alpha=0.2)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"start ({baseline:.3f})")
    n = len(next(iter(next(iter(curves.values())).values())))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{ylabel} (n = {n})")
    ax.set_title(title + ("\n" if title else "") + "shaded: 95 % interval", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_token_logp_change(tokens: dict[str, list[str]], before: dict[str, list[float]], after: dict[str, list[float]],
                           diverge: int, title: str = ""):
    """Per-token change of log p for the chosen and the rejected reply of one pair (one panel each).

    tokens/before/after: {"chosen": [...], "rejected": [...]} over the reply tokens; `diverge` is the index of the
    first token where the replies differ (tokens before it are shared). Bars: after − before, in nats.
    """
    fig, axes = new_figure(1, 2, width=6.0, height=3.2)
    for ax, key in zip(np.atleast_1d(axes), ("chosen", "rejected")):
        delta = np.array(after[key]) - np.array(before[key])
        colors = ["tab:gray" if i < diverge else ("tab:red" if i == diverge else "tab:blue") for i in range(len(delta))]
        ax.bar(range(len(delta)), delta, color=colors)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(delta)))
        ax.set_xticklabels([repr(t)[1:-1] for t in tokens[key]], rotation=90, fontsize=7)
        ax.set_title(f"{key} reply", fontsize=9)
        ax.set_ylabel("Δ log p (after − before), nats")
    fig.suptitle((title + "\n" if title else "") + "gray: shared prefix, red: first differing token, blue: after it",
                 fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_family(rows: dict[str, dict], title: str = ""):
    """The DPO family side by side: held-out exact-match change from the start and KL on policy samples, ±1.96·SE.

    rows: {method: {"change", "change_se", "sampled_kl", "sampled_kl_se"}} (benchmarks/results/dpo_family.json).
    """
    names = list(rows)
    y = np.arange(len(names))
    fig, axes = new_figure(1, 2, width=6.2, height=0.45 * len(names) + 1.4)
    for ax, key, label in ((axes[0], "change", "exact-match change from the SFT start"),
                           (axes[1], "sampled_kl", "KL(π ‖ π_ref) per reply, nats (policy samples)")):
        vals = np.array([rows[n][key] for n in names])
        err = 1.96 * np.array([rows[n][key + "_se"] for n in names])
        ax.barh(y, vals, xerr=err, color=["tab:green" if v > 0 else "tab:red" for v in vals] if key == "change"
                else "tab:blue", capsize=3)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel(label, fontsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels(names if ax is axes[0] else [], fontsize=8)
        ax.invert_yaxis()
    fig.suptitle((title + "\n" if title else "") + "bars ± 95 % interval", fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_beta_sweep(rows: dict[str, dict], start: float | None = None):
    """β against held-out exact match and KL on policy samples (±1.96·SE); rows {str(β): row} as in plot_family;
    `start` (the accuracy before training) as a dashed line."""
    betas = sorted(rows, key=float)
    x = np.array([float(b) for b in betas])
    fig, axes = new_figure(1, 2, width=6.2, height=3.0)
    for ax, key, label in ((axes[0], "accuracy", "held-out exact match"),
                           (axes[1], "sampled_kl", "KL(π ‖ π_ref) per reply, nats")):
        vals = np.array([rows[b][key] for b in betas])
        err = 1.96 * np.array([rows[b][key + "_se"] for b in betas])
        ax.errorbar(x, vals, yerr=err, marker="o", capsize=3, label="after DPO")
        if start is not None and key == "accuracy":
            ax.axhline(start, color="gray", ls="--", lw=1, label=f"start ({start:.3f})")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_ylabel(label)
    fig.suptitle("DPO, same pairs and steps, one run per β; bars ± 95 % interval", fontsize=9)
    fig.tight_layout()
    return fig, axes
