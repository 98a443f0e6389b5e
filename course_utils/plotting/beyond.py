"""Lecture 13 (beyond the block) plots: accuracies with their intervals, a causal-tracing map, decode-time memory."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_accuracies(rows: dict, *, chance: float | None = None, title: str = "", ylabel: str = "accuracy"):
    """rows: {label: list of 0/1 per problem} -> bars with 95 % Wilson intervals (and a dashed chance line)."""
    from ..stats import binomial_ci

    if not rows:
        raise ValueError("rows must be a non-empty dict {label: list of 0/1 per problem}")
    labels = list(rows)
    acc = np.array([sum(map(float, v)) / len(v) for v in rows.values()])
    ci = np.array([binomial_ci(int(sum(map(float, v))), len(v)) for v in rows.values()])  # (n_rows, 2)
    fig, ax = new_figure(width=7.0, height=3.4)
    x = np.arange(len(labels))
    ax.bar(x, acc, 0.7, yerr=[acc - ci[:, 0], ci[:, 1] - acc], capsize=3, color="C0")
    for xi, top, a in zip(x, ci[:, 1], acc):
        ax.text(xi, top + 0.02, f"{a:.2f}", ha="center", fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"majority answer {chance:.2f}")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xticks(x, labels, fontsize=8, rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} with 95 % intervals (n = {len(next(iter(rows.values())))} each)", fontsize=9)
    return fig, ax


def plot_causal_trace(traces: dict, *, title: str = ""):
    """traces: {kind: TraceResult} -> one heatmap per kind: P(target) with one activation restored (layer × token)."""
    if not traces:
        raise ValueError("traces must be a non-empty dict {kind: TraceResult}")
    fig, axes = new_figure(1, len(traces), width=2.9, height=3.0, sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    first = next(iter(traces.values()))
    labels = [t.replace("Ġ", " ").strip() + (" *" if i in first.subject_positions else "")  # Ġ: the tokenizer's space
              for i, t in enumerate(first.tokens)]
    for ax, (kind, tr) in zip(axes, traces.items()):
        probs = tr.probs.T.numpy()  # (T, n_layers)
        im = ax.imshow(probs, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(probs.shape[1]))
        ax.set_xlabel("layer")
        ax.set_title(f"restore the {kind} output", fontsize=9)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(im, ax=axes.tolist(), label="P(target) after restoring", shrink=0.9)
    fig.suptitle((title or "causal tracing") + "  (* = the noised subject token)", fontsize=9)
    return fig, axes


def plot_decode_memory(lengths, curves: dict, *, title: str = ""):
    """curves: {label: bytes at each context length} -> log-log lines (KV caches grow, an SSM state does not)."""
    if not curves:
        raise ValueError("curves must be a non-empty dict {label: bytes per length}")
    fig, ax = new_figure(width=6.0, height=3.4)
    for label, values in curves.items():
        ax.plot(lengths, np.asarray(values) / 2**20, marker="o", ms=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens in the context")
    ax.set_ylabel("decode-time state (MiB, bf16, batch 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "what a model keeps while it decodes", fontsize=9)
    return fig, ax


def plot_choice_probs(choices, probs, truth: str, *, title: str = ""):
    """The reader's probability of each allowed answer (the true one in another colour)."""
    if len(choices) != len(probs):
        raise ValueError(f"choices and probs must have the same length, got {len(choices)} and {len(probs)}")
    fig, ax = new_figure(width=6.5, height=2.8)
    colours = ["C2" if c == truth else "C0" for c in choices]
    ax.bar(range(len(choices)), [float(p) for p in probs], color=colours)
    ax.set_xticks(range(len(choices)), [c.removeprefix("the ") for c in choices], fontsize=8, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("P(answer)")
    ax.set_title(title or f"the reader's answer (green: the true one, {truth!r})", fontsize=9)
    return fig, ax
