"""Lecture 03 (positional encoding) plots: position matrices, RoPE wavelengths, T5 buckets, extrapolation."""

from __future__ import annotations

import numpy as np

from .figure import new_figure


def plot_position_matrix(m, title: str = "", xlabel: str = "", ylabel: str = "", cmap: str = "RdBu_r",
                         value_label: str = "value"):
    """A heatmap of a 2-D tensor with a colour bar labelled `value_label`: (fig, ax)."""
    fig, ax = new_figure(width=5.5, height=3.8)
    im = ax.imshow(m.detach().cpu().numpy() if hasattr(m, "detach") else m, aspect="auto", cmap=cmap)
    fig.colorbar(im, ax=ax, label=value_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def plot_rope_wavelengths(wavelengths, context: int, labelled: dict | None = None):
    """Tokens per turn of each rotary pair (log scale) against the training context: (fig, ax).

    labelled: optional {label: wavelengths} for scaled variants drawn on top.
    """
    fig, ax = new_figure(width=6.0, height=3.5)
    ax.semilogy(wavelengths, marker="o", ms=3, label="plain RoPE")
    for label, w in (labelled or {}).items():
        ax.semilogy(w, marker=".", ms=3, lw=1, label=label)
    ax.axhline(context, color="r", ls="--", label=f"training context {context}")
    ax.set_xlabel("rotary pair i")
    ax.set_ylabel("wavelength 2*pi/theta_i (tokens)")
    ax.set_title("tokens per turn of each rotary pair")
    ax.legend(fontsize=8)
    return fig, ax


def plot_t5_buckets(rel, buckets: dict):
    """buckets {label: bucket ids for relative positions rel} -> step plot: (fig, ax)."""
    fig, ax = new_figure(width=6.0, height=3.2)
    for label, b in buckets.items():
        ax.step(rel, b, where="mid", label=label)
    ax.set_xlabel("relative position (key - query)")
    ax.set_ylabel("bucket id")
    ax.set_title("T5 relative-position buckets")
    ax.legend(fontsize=8)
    return fig, ax


def plot_extrapolation(table: dict, train_len: int, title: str = "held-out perplexity vs length"):
    """table {method: {length: perplexity}} -> one line per method, log-log: (fig, ax)."""
    fig, ax = new_figure(width=6.5, height=4.0)
    for method, by_len in table.items():
        lengths = sorted(by_len)
        ax.plot(lengths, [by_len[n] for n in lengths], marker="o", label=method)
    ax.axvline(train_len, color="gray", ls=":", label=f"trained length {train_len}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_position_loss(curves: dict, train_len: int, bin_size: int = 64, title: str = "loss by position"):
    """curves {label: per-position NLL (T-1,)} averaged in bins of bin_size positions: (fig, ax)."""
    fig, ax = new_figure(width=6.5, height=3.5)
    for label, nll in curves.items():
        n = (len(nll) // bin_size) * bin_size
        binned = nll[:n].reshape(-1, bin_size).mean(-1)
        ax.plot((np.arange(len(binned)) + 0.5) * bin_size, binned, label=label)
    ax.axvline(train_len, color="gray", ls=":", label="trained length")
    ax.set_xlabel("position in the sequence")
    ax.set_ylabel(f"mean NLL (bins of {bin_size})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax
