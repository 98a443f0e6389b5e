"""Lecture 09 (GRPO lab) plots: per-round history, reward curves, per-token gradient weights, test-time compute."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .figure import new_figure


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


def plot_test_time_compute(rows: list):
    """Accuracy vs generated tokens per problem (log x), one labelled point per method: rows of {name, tokens, acc}."""
    if not rows:
        raise ValueError("rows must be a non-empty list of dicts with name, tokens, acc")
    fig, ax = new_figure(width=5.5, height=3.5)
    for i, r in enumerate(rows):  # labels alternate above and below so points at the same x stay readable
        ax.scatter(r["tokens"], r["acc"], s=40)
        ax.annotate(r["name"], (r["tokens"], r["acc"]), textcoords="offset points", xytext=(5, 4 if i % 2 else -10),
                    fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    tokens = [r["tokens"] for r in rows]
    ax.set_xticks([n for n in (10, 25, 50, 100, 200, 400, 800, 1600) if min(tokens) / 2 <= n <= 2 * max(tokens)])
    ax.set_xlabel("generated tokens per problem (log scale)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(max(0.0, min(r["acc"] for r in rows) - 0.08), 1.0)
    ax.set_title("accuracy vs generated tokens per problem")
    return fig, ax
