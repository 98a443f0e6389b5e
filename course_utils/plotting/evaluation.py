"""Lecture 12 (evaluation) plots: the standard error of an accuracy against eval size, judges' accuracy under
padding, and measured accuracy against the share of leaked test items."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_se_vs_n(ns, curves: dict, *, gain: float | None = None, marks: dict | None = None, title: str = ""):
    """curves: {label: SE at each n of `ns`}; gain: draws the line SE = gain / 2 (a gain seen at 2 SE below it);
    marks: {label: n} vertical markers (e.g. the problems needed), coloured like the curves in the same order."""
    if not curves:
        raise ValueError("curves must be a non-empty dict {label: standard errors}")
    fig, ax = new_figure(width=6.0, height=3.6)
    for label, se in curves.items():
        ax.plot(ns, se, label=label)
    if gain is not None:
        ax.axhline(gain / 2, color="0.3", ls="--", lw=1, label=f"gain / 2 = {gain / 2:.3f} (a {gain:.3f} gain at 2 SE)")
    for k, (label, n) in enumerate((marks or {}).items()):
        ax.axvline(n, color=f"C{k}", ls=":", lw=1.2)
        ax.annotate(f"{label} = {n}", (n, ax.get_ylim()[1]), xytext=(-3, -12 - 12 * k), textcoords="offset points",
                    fontsize=8, color=f"C{k}", ha="right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("problems evaluated (n)")
    ax.set_ylabel("standard error of the gain (accuracy)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "how the error bar shrinks with the eval size", fontsize=9)
    return fig, ax


def plot_judges(rows: dict, *, title: str = ""):
    """rows: {judge: {condition: (right verdicts, pairs)}} -> grouped bars with 95 % Wilson intervals, chance at 0.5."""
    from ..stats import binomial_ci

    if not rows:
        raise ValueError("rows must be a non-empty dict {judge: {condition: (right verdicts, pairs)}}")
    judges, conditions = list(rows), list(next(iter(rows.values())))
    fig, ax = new_figure(width=7.0, height=3.6)
    width = 0.8 / len(conditions)
    x = np.arange(len(judges))
    for k, cond in enumerate(conditions):
        acc = np.array([rows[j][cond][0] / rows[j][cond][1] for j in judges])
        ci = np.array([binomial_ci(*rows[j][cond]) for j in judges])  # (judges, 2)
        xs = x + (k - (len(conditions) - 1) / 2) * width
        ax.bar(xs, acc, width, yerr=[acc - ci[:, 0], ci[:, 1] - acc], capsize=3, label=cond)
        for xi, top, a in zip(xs, ci[:, 1], acc):
            ax.text(xi, top + 0.02, f"{a:.2f}", ha="center", fontsize=7)
    ax.axhline(0.5, color="0.3", ls="--", lw=1, label="chance (a coin flip)")
    handles, labels = ax.get_legend_handles_labels()  # bars first, in drawing order, then the chance line
    order = [i for i, lab in enumerate(labels) if lab in conditions] + [i for i, lab in enumerate(labels) if lab not in conditions]
    ax.set_xticks(x, judges, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("swap-averaged accuracy\n(agreement with the verifier)")
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.set_title(title or "which reply is right? each judge with and without padding (95 % Wilson intervals)", fontsize=9)
    fig.tight_layout()
    return fig, ax


def plot_contamination(shares, accuracy, se, *, clean: float, leaked: float, n: int, title: str = ""):
    """Measured accuracy (± 1.96 SE) on n items against the share of them that leaked into training, with the straight
    line clean + share * (leaked - clean) that a mixture gives on average."""
    shares, accuracy, se = (np.asarray(v, dtype=float) for v in (shares, accuracy, se))
    fig, ax = new_figure(width=5.5, height=3.6)
    ax.errorbar(shares, accuracy, yerr=1.96 * se, fmt="o", capsize=3,
                label=f"measured on a mixed test set of {n} items (95 % interval)")
    ax.plot([0, 1], [clean, leaked], "--", color="0.4", label="clean + share × (leaked − clean)")
    ax.set_xlabel("share of test items seen in training")
    ax.set_ylabel("measured accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "a leaked test set measures memory, not skill", fontsize=9)
    return fig, ax


def plot_gain_distribution(gain: float, ses: dict, *, min_z: float = 2.0, title: str = ""):
    """ses: {design: SE of the measured gain}. One normal curve per design for the gain an evaluation measures around
    the true `gain`, its min_z-SE threshold (dotted) and the shaded share of evaluations that pass it (the power)."""
    from statistics import NormalDist

    if not ses:
        raise ValueError("ses must be a non-empty dict {design: standard error}")
    fig, ax = new_figure(width=6.0, height=3.4)
    width = 4 * max(ses.values())
    x = np.linspace(min(0.0, gain - width), gain + width, 400)
    for k, (name, se) in enumerate(ses.items()):
        dist = NormalDist(gain, se)
        y = np.array([dist.pdf(v) for v in x])
        power = 1 - dist.cdf(min_z * se)
        ax.plot(x, y, color=f"C{k}", label=f"{name}: SE {se:.4f}, power {power:.2f}")
        ax.fill_between(x, y, where=x >= min_z * se, color=f"C{k}", alpha=0.25)
        ax.axvline(min_z * se, color=f"C{k}", ls=":", lw=1.2)
    ax.axvline(gain, color="0.3", lw=1, label=f"true gain {gain:.3f}")
    ax.set_xlabel("gain an evaluation measures")
    ax.set_ylabel("probability density")
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or f"shaded: evaluations whose gain reaches {min_z:g} SE (dotted)", fontsize=9)
    return fig, ax
