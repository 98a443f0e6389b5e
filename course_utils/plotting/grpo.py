"""Lecture 09 (GRPO lab) plots: per-round history, reward curves, per-token gradient weights, test-time compute."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_grpo_history(history: list, *, title: str = ""):
    """Five panels over rounds from train_grpo's history: rewards (format, accuracy), held-out accuracy, length, KL, entropy."""
    if not history:
        raise ValueError("history must be a non-empty list of per-round dicts (GRPOResult.history)")

    def series(key):
        rows = [h for h in history if key in h]
        return [h["step"] for h in rows], [h[key] for h in rows]

    fig, axes = new_figure(1, 5, width=3.2, height=2.8)
    for key, label in (("reward_format", "format"), ("reward_accuracy", "accuracy"), ("reward", "total")):
        axes[0].plot(*series(key), label=label)
    axes[0].set_title("mean reward")
    axes[0].legend(fontsize=7)
    axes[1].plot(*series("eval_acc"), "o-")
    axes[1].set_title("held-out accuracy (greedy)")
    axes[1].set_ylim(0, 1)
    for ax, key, name in ((axes[2], "length", "completion length (tokens)"), (axes[3], "kl", "KL to reference (k3)"),
                          (axes[4], "entropy", "policy entropy (nats/token)")):
        ax.plot(*series(key))
        ax.set_title(name)
    for ax in axes:
        ax.set_xlabel("round")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def plot_reward_curves(curves: dict, *, ylabel: str = "mean reward"):
    """Overlay reward curves {name: (steps, values)} (e.g. our loop vs trl's GRPOTrainer)."""
    if not curves:
        raise ValueError("curves must be a non-empty dict name -> (steps, values)")
    fig, ax = new_figure(width=5.0, height=3.2)
    for name, (x, y) in curves.items():
        ax.plot(x, y, "o-", ms=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
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
    for r in rows:
        ax.scatter(r["tokens"], r["acc"], s=40)
        ax.annotate(r["name"], (r["tokens"], r["acc"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("test-time compute vs training")
    return fig, ax
