"""Lecture 09 (GRPO lab) plots: per-round history (also live during training), reward curves, per-token gradient
weights, pass@k curves, and runs side by side (controls, DAPO / Dr. GRPO ablations)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from .figure import legend_below, live_figure, new_figure


def plot_grpo_history(history: list, *, title: str = ""):
    """Five panels over rounds from train_grpo's history: rewards (format, accuracy), held-out accuracy, length, KL, entropy."""
    if not history:
        raise ValueError("history must be a non-empty list of per-round dicts (GRPOResult.history)")

    def series(key):
        rows = [h for h in history if key in h]
        return [h["step"] for h in rows], [h[key] for h in rows]

    fig, axes = new_figure(1, 5, width=3.2, height=2.8)
    for key, label in (("reward_format", "format"), ("reward_accuracy", "accuracy"), ("reward_digits", "digits"),
                       ("reward", "total (sum, max 3)")):
        if any(key in h for h in history):
            axes[0].plot(*series(key), label=label)
    axes[0].set_title("mean reward per completion")
    axes[0].legend(fontsize=7)
    axes[1].plot(*series("eval_acc"), "o-", label="exact answer")
    axes[1].set_title("held-out accuracy (greedy)")
    axes[1].legend(fontsize=7)
    for ax, key, name in ((axes[2], "length", "completion length (tokens)"), (axes[3], "kl", "KL to reference (k3, nats/token)"),
                          (axes[4], "entropy", "policy entropy (nats/token)")):
        ax.plot(*series(key))
        ax.set_title(name)
    for ax in axes:
        ax.set_xlabel("round")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def plot_reward_curves(curves: dict, *, ylabel: str = "mean reward", title: str = ""):
    """Overlay reward curves {name: (steps, values)} (e.g. our loop vs trl's GRPOTrainer)."""
    if not curves:
        raise ValueError("curves must be a non-empty dict name -> (steps, values)")
    fig, ax = new_figure(width=5.0, height=3.2)
    for name, (x, y) in curves.items():
        ax.plot(x, y, "o-", ms=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_token_weights(weights: dict, lengths, advantages):
    """Per-token gradient weight |d loss / d logp| for each completion under each loss_type (bars grouped by completion)."""
    if not weights:
        raise ValueError("weights must be a non-empty dict loss_type -> (N, C) tensor")
    fig, ax = new_figure(width=5.5, height=3.2)
    n = len(lengths)
    width = 0.8 / len(weights)
    for k, (name, w) in enumerate(weights.items()):
        per_token = [abs(float(w[i, 0])) for i in range(n)]
        ax.bar(np.arange(n) + k * width, per_token, width, label=name)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2,
                  [f"len {L}, A={a:+.2f}" for L, a in zip(lengths, advantages)], fontsize=7)
    ax.set_ylabel("|gradient| per token")
    ax.set_title("how much each token is pushed")
    ax.legend(fontsize=8)
    return fig, ax


def live_history(every: int = 5, *, last: int | None = None, title: str = "", plot=None, unit: str = "round"):
    """A training-loop callback `callback(row)` (row: a dict with "step") that redraws `plot(history, title=...)`
    (default plot_grpo_history) every `every` steps (and at step `last`) in one output area (figure.live_figure);
    `unit` names a step in the title."""
    history, redraw = [], live_figure()

    def callback(row: dict) -> None:
        history.append(row)
        if row["step"] == 0 or (row["step"] % every and row["step"] != last):
            return  # nothing to draw before the first step (a step-0 row holds only the starting evaluation)
        fig, _ = (plot or plot_grpo_history)(history, title=f"{title} (live, {unit} {row['step']})".strip())
        redraw(fig)

    return callback


def plot_pass_at_k(curves: dict, ks, *, majority: dict | None = None, title: str = ""):
    """pass@k (unbiased, mean ± 1.96 SE band over problems) per model against k (log 2 axis); majority@k dashed.

    curves: {model name: [(mean, se) for each k]} (grpo.pass_at_k_curve); majority: {model name: [acc for each k]}.
    """
    if not curves:
        raise ValueError("curves must be a non-empty dict model name -> [(mean, se), ...]")
    fig, ax = new_figure(width=5.5, height=3.6)
    for i, (name, pts) in enumerate(curves.items()):
        mean = np.array([m for m, _ in pts])
        se = np.array([s for _, s in pts])
        color = f"C{i}"
        ax.plot(ks, mean, "o-", ms=3, color=color, label=f"pass@k, {name}")
        ax.fill_between(ks, mean - 1.96 * se, np.minimum(1.0, mean + 1.96 * se), color=color, alpha=0.2, lw=0)
        if majority and name in majority:
            ax.plot(ks, majority[name], "s--", ms=3, color=color, label=f"majority@k, {name}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("k (samples per problem, T = 1)")
    ax.set_ylabel("share of held-out problems")
    ax.set_title(title or "pass@k: solved by at least one of k samples (band: 95 %)")
    ax.legend(fontsize=7, loc="lower right")
    return fig, ax


def _moving_average(y, window: int):
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) < window:
        return y
    return np.convolve(y, np.ones(window) / window, mode="valid")


def plot_runs(runs: dict, panels: list, *, window: int = 10, title: str = ""):
    """Runs side by side, one panel per (metric key, y label): "eval:<key>" plots a held-out evaluation (a point at
    each evaluation), any other key a per-round metric as a `window`-round moving average. One legend under the panels.

    runs: {label: {"history": [per-round dicts], "eval": [{"step", <key>...}]}} (benchmarks/results/grpo_controls.json).
    """
    if not runs or not panels:
        raise ValueError("runs and panels must be non-empty")
    fig, axes = new_figure(1, len(panels), width=3.6, height=3.0)
    axes = np.atleast_1d(axes)
    for ax, (key, name) in zip(axes, panels):
        for i, (label, run) in enumerate(runs.items()):
            if key.startswith("eval:"):
                k = key.split(":", 1)[1]
                ax.plot([e["step"] for e in run["eval"]], [e[k] for e in run["eval"]], "o-", ms=3, color=f"C{i}", label=label)
                continue
            rows = [h for h in run["history"] if key in h]
            if not rows:
                continue
            y = _moving_average([h[key] for h in rows], window)
            x = [h["step"] for h in rows][len(rows) - len(y):]
            ax.plot(x, y, color=f"C{i}", label=label)
        ax.set_ylabel(name, fontsize=8)
        ax.set_title("held-out, every evaluation" if key.startswith("eval:") else f"{window}-round moving average", fontsize=8)
        ax.set_xlabel("round")
    legend_below(fig, axes[0], title)
    return fig, axes
