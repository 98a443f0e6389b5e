"""Lecture 10 (RLHF lab) plots: reward-model calibration, best-of-n against the proxy, the per-round history of a
PPO/RLOO run (also live), and reward over-optimization (proxy and true reward against the KL from the start)."""

from __future__ import annotations

import numpy as np

from .figure import legend_below, new_figure
from .grpo import _moving_average


def plot_calibration(rows: list, *, title: str = ""):
    """Reliability diagram from reward_model.calibration: predicted confidence σ(|margin|) vs observed accuracy
    (± 1.96 SE) per bin; the diagonal is a calibrated model."""
    if not rows:
        raise ValueError("rows must be a non-empty list from reward_model.calibration")
    fig, ax = new_figure(width=4.2, height=3.6)
    conf = [r["confidence"] for r in rows]
    acc = [r["accuracy"] for r in rows]
    ax.errorbar(conf, acc, yerr=[1.96 * r["se"] for r in rows], fmt="o-", capsize=3, label="reward model")
    ax.plot([0.5, 1.0], [0.5, 1.0], "k--", lw=1, label="calibrated")
    ax.set_xlim(0.45, 1.02)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("predicted P(labelled reply wins) = σ(|r_c − r_r|)")
    ax.set_ylabel("held-out pairs the model orders right")
    ax.set_title(title or "calibration (bins of equal count; bars: 95 %)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return fig, ax


def plot_best_of_n(rows: list, *, title: str = ""):
    """Best-of-n by the proxy reward (reward_model.best_of_n_curve): the change in proxy and in true reward from a single
    sample, against n, with 95 % bands from the paired SE over prompts."""
    if not rows:
        raise ValueError("rows must be a non-empty list from reward_model.best_of_n_curve")
    fig, axes = new_figure(1, 2, width=3.8, height=3.2)
    ns = [r["n"] for r in rows]
    for ax, key, label in ((axes[0], "proxy", "change in reward-model score"),
                           (axes[1], "true", "change in share of right replies")):
        gain = np.array([r[f"{key}_gain"] for r in rows])
        se = np.array([r[f"{key}_gain_se"] for r in rows])
        ax.plot(ns, gain, "o-", ms=3)
        ax.fill_between(ns, gain - 1.96 * se, gain + 1.96 * se, alpha=0.2, lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("n (samples; keep the proxy's favourite)")
        ax.set_ylabel(label)
    axes[0].set_title("proxy: what the reward model sees", fontsize=9)
    axes[1].set_title("true: what the verifier sees", fontsize=9)
    fig.suptitle(title or "best-of-n vs a single sample (bands: 95 %, paired over prompts)", fontsize=10)
    fig.tight_layout()
    return fig, axes


def plot_rlhf_history(history: list, *, window: int = 5, title: str = ""):
    """Four panels over rounds from ppo.train_rlhf's history: proxy reward, true reward (sampled, `window`-round moving
    average, and held-out greedy accuracy where evaluated), KL to the reference per sequence, entropy."""
    rounds = [h for h in history if "proxy" in h]
    if not rounds:
        raise ValueError("history must hold per-round dicts from ppo.train_rlhf (with 'proxy')")
    steps = [h["step"] for h in rounds]

    def smooth(key):
        y = _moving_average([h[key] for h in rounds], window)
        return steps[len(steps) - len(y):], y

    fig, axes = new_figure(1, 4, width=3.1, height=2.8)
    panels = (("proxy", "proxy: reward-model score"), ("true", "true: share of right samples"),
              ("kl", "KL to reference (nats / reply)"), ("entropy", "entropy (nats / token)"))
    for i, (ax, (key, name)) in enumerate(zip(axes, panels)):
        ax.plot(steps, [h[key] for h in rounds], color=f"C{i}", alpha=0.3, lw=1, label="each round")
        ax.plot(*smooth(key), color=f"C{i}", label=f"{window}-round mean")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round")
    evals = [h for h in history if "eval_acc" in h]
    if evals:
        axes[1].plot([h["step"] for h in evals], [h["eval_acc"] for h in evals], "ks-", ms=3, label="held-out, greedy")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def plot_overoptimization(runs: dict, *, window: int = 10, title: str = ""):
    """Reward over-optimization (Gao et al. 2022): proxy and true reward, each as its `window`-round moving average,
    against d = sqrt(KL to the start) (its moving average too), one line per run.

    runs: {label: [per-round dicts with proxy, true, kl]}.
    """
    if not runs:
        raise ValueError("runs must be a non-empty dict label -> per-round history")
    fig, axes = new_figure(1, 2, width=4.6, height=3.4)
    for i, (label, history) in enumerate(runs.items()):
        rows = [h for h in history if "proxy" in h]
        d = np.sqrt(np.maximum(_moving_average([h["kl"] for h in rows], window), 0.0))
        for ax, key in ((axes[0], "proxy"), (axes[1], "true")):
            ax.plot(d, _moving_average([h[key] for h in rows], window), color=f"C{i}", label=label)
    axes[0].set_ylabel("proxy: reward-model score")
    axes[1].set_ylabel("true: share of right samples")
    for ax in axes:
        ax.set_xlabel("d = sqrt(KL to the SFT model), nats^½")
    axes[0].set_title(f"what PPO optimizes ({window}-round means)", fontsize=9)
    axes[1].set_title("what we wanted", fontsize=9)
    legend_below(fig, axes[0], title)
    return fig, axes
