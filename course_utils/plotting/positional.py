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


def plot_rope_wavelengths(wavelengths, context: int, labelled: dict | None = None, *, ax=None):
    """Tokens per turn of each rotary pair (log scale) against the training context: (fig, ax).

    labelled: optional {label: wavelengths} for scaled variants drawn on top. ax: draw there instead of a new figure.
    """
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=6.0, height=3.5)
    ax.semilogy(wavelengths, marker="o", ms=3, label="plain RoPE")
    for label, w in (labelled or {}).items():
        ax.semilogy(w, marker=".", ms=3, lw=1, label=label)
    ax.axhline(context, color="r", ls="--", label=_trained_label(context))
    ax.set_xlabel("rotary pair i")
    ax.set_ylabel("wavelength 2*pi/theta_i (tokens)")
    ax.set_title("tokens per turn of each rotary pair")
    ax.legend(fontsize=8)
    return fig, ax


def redraw_rope_wavelengths(ax, wavelengths, context: int, labelled: dict | None = None) -> None:
    """Move the lines plot_rope_wavelengths drew on `ax` (the same number of variants) to new wavelengths, context and
    labels, in place: a widget's redraw without new axes and ticks."""
    curves = {"plain RoPE": wavelengths, **(labelled or {})}
    for line, (label, w) in zip(ax.lines, curves.items()):
        line.set(ydata=w, label=label)
    ax.lines[len(curves)].set(ydata=[context] * 2, label=_trained_label(context))
    _rescale_and_relabel(ax)


def _trained_label(context: int) -> str:
    return f"training context {context}"


def _rescale_and_relabel(ax) -> None:
    """Limits and legend of `ax` for its lines' new data and labels."""
    ax.relim()
    ax.autoscale_view()
    ax.legend(fontsize=8)


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


def plot_rope_rotation(inv_freq, pairs=(0, 4, 12), positions: int = 64):
    """Where RoPE turns a unit 2-D pair at positions 0..positions-1, one panel per pair (colour = position)."""
    fig, axes = new_figure(1, len(pairs), width=2.9, height=3.1)
    p = np.arange(positions)
    for ax, i in zip(np.atleast_1d(axes), pairs):
        angle = p * float(inv_freq[i])
        points = ax.scatter(np.cos(angle), np.sin(angle), c=p, cmap="viridis", s=14)
        ax.plot([0, 1], [0, 0], color="k", lw=1)
        ax.set_aspect("equal")
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_title(f"pair {i}: {2 * np.pi / float(inv_freq[i]):.0f} tokens per turn", fontsize=9)
        ax.set_xlabel("dim i")
    np.atleast_1d(axes)[0].set_ylabel("dim i + D/2")
    fig.colorbar(points, ax=axes, label="position p", shrink=0.8)
    return fig, axes


def plot_score_bound(curves: dict, context: int | None = None, *, ax=None):
    """curves {label: (distances, bound)} -> RoPE's relative upper bound of |q.k| vs distance, log x: (fig, ax).
    ax: draw there instead of a new figure."""
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=6.0, height=3.3)
    for label, (m, bound) in curves.items():
        ax.semilogx(m, bound, label=label)
    if context:
        ax.axvline(context, color="gray", ls=":", label=_context_label(context))
    ax.set_xlabel("relative distance m (tokens)")
    ax.set_ylabel("(2/D) sum_j |S_j|")
    ax.set_title("RoPE's long-term decay (Su et al. 2021, Sec. 3.4.3)")
    ax.legend(fontsize=8)
    return fig, ax


def redraw_score_bound(ax, curves: dict, context: int) -> None:
    """Move the lines plot_score_bound drew on `ax` (the same curves, with a context line) to new data, in place."""
    for line, (label, (m, bound)) in zip(ax.lines, curves.items()):
        line.set(data=(m, bound), label=label)
    ax.lines[len(curves)].set(xdata=[context] * 2, label=_context_label(context))
    _rescale_and_relabel(ax)


def _context_label(context: int) -> str:
    return f"context {context}"


def plot_alibi_bias(bias, heads=(0, 3, 7)):
    """ALiBi's bias (H, T, T) for a few heads, the causal part only, shared colour scale: (fig, axes)."""
    b = bias.detach().cpu().numpy().copy()
    T = b.shape[-1]
    b[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = np.nan  # masked: the future
    fig, axes = new_figure(1, len(heads), width=3.0, height=3.0)
    for ax, h in zip(np.atleast_1d(axes), heads):
        im = ax.imshow(b[h], cmap="viridis", vmin=np.nanmin(b[list(heads)]), vmax=0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xlabel("key j")
    np.atleast_1d(axes)[0].set_ylabel("query i")
    fig.colorbar(im, ax=axes, label="bias = -slope * (i - j)", shrink=0.8)
    return fig, axes


def plot_passkey_accuracy(results: dict, train_len: int, ax=None):
    """results {method: {length: (n,) bool correct}} -> accuracy ± 2 SE vs length, log x: (fig, ax)."""
    fig, ax = new_figure(width=7.0, height=4.0) if ax is None else (ax.figure, ax)
    for j, (method, by_len) in enumerate(results.items()):
        lengths = sorted(by_len)
        acc = np.array([by_len[t].float().mean().item() for t in lengths])
        se = np.sqrt(acc * (1 - acc) / np.array([len(by_len[t]) for t in lengths]))
        ax.errorbar(lengths, acc, yerr=2 * se, marker="o", capsize=3, label=method,
                    ls="--" if j >= 6 else "-")
    ax.axvline(train_len, color="gray", ls=":", label=f"trained length L = {train_len}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(next(iter(results.values()))))
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("passkey accuracy (± 2 SE)")
    ax.set_title("passkey retrieval beyond the trained length")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig, ax


def plot_score_profile(profiles: dict, train_len: int):
    """profiles {label: passkey.ask_score_profile(...)} -> the <ask> query's scores by distance: (fig, axes)."""
    fig, axes = new_figure(1, len(profiles), width=4.6, height=3.4, sharey=True)
    for ax, (label, p) in zip(np.atleast_1d(axes), profiles.items()):
        ax.plot(p["distance"], p["key_score"], marker="o", color="C3", label="the passkey's first digit")
        ax.plot(p["distance"], p["filler_p99"], color="C0", label="filler keys: top 1%")
        ax.plot(p["distance"], p["filler_mean"], color="C0", ls="--", label="filler keys: mean")
        ax.axvline(train_len, color="gray", ls=":", label=f"L = {train_len}")
        ax.set_xlabel("distance from <ask> to the key (tokens)")
        ax.set_title(label, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("attention score (pre-softmax)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return fig, axes
