"""Lecture 01 (attention) plots: weight heatmaps, masks, the sqrt(d_k) study, entropy grids, cost curves."""

from __future__ import annotations

import torch
from matplotlib.ticker import FixedFormatter

from .figure import new_figure


LABELLED_TOKENS = 40  # a heatmap of at most this many queries and keys gets a label per token


def plot_attention_weights(weights, tokens_q=None, tokens_k=None, *, ax=None, title: str = "", vmax=None):
    """Heatmap of one attention matrix weights (T, S), rows = queries, columns = keys; token labels optional."""
    w = _weight_matrix(weights, tokens_q, tokens_k)
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=4.5, height=4.0)
    im = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    _label_tokens(ax, w, tokens_q, tokens_k)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    return fig, ax


def redraw_attention_weights(ax, weights, tokens_q=None, tokens_k=None, *, title: str = "", vmax=None) -> None:
    """Set the heatmap that plot_attention_weights drew on `ax` to new weights (T, S), labels and title in place (a
    widget's redraw without new axes, colour bar and ticks). Old and new at most LABELLED_TOKENS tokens each, or
    neither labelled."""
    w = _weight_matrix(weights, tokens_q, tokens_k)
    image = ax.images[0]
    if image.get_array().shape != w.shape:  # a new text: the image and the axes' limits take its size
        image.set_extent((-0.5, w.shape[1] - 0.5, w.shape[0] - 0.5, -0.5))  # where imshow puts a (T, S) image
    image.set_data(w.numpy())
    image.set_clim(0.0, w.max().item() if vmax is None else vmax)  # as imshow scales it
    _label_tokens(ax, w, tokens_q, tokens_k)
    ax.set_title(title)


def _weight_matrix(weights, tokens_q, tokens_k) -> torch.Tensor:
    w = weights.detach().float().cpu() if isinstance(weights, torch.Tensor) else torch.as_tensor(weights).float()
    if w.dim() != 2:
        raise ValueError(f"weights must be a (T, S) matrix, got shape {tuple(w.shape)}")
    for name, toks, n in (("tokens_q", tokens_q, w.shape[0]), ("tokens_k", tokens_k, w.shape[1])):
        if toks is not None and len(toks) != n:
            raise ValueError(f"{name} must have {n} labels to match weights {tuple(w.shape)}, got {len(toks)}")
    return w


def _label_tokens(ax, w, tokens_q, tokens_k) -> None:
    """A tick label per token where there are at most LABELLED_TOKENS (kept where the axis already has these)."""
    if max(w.shape) > LABELLED_TOKENS:
        return
    for axis, tokens, style in ((ax.xaxis, tokens_k, dict(rotation=90, fontsize=7)),
                                (ax.yaxis, tokens_q, dict(fontsize=7))):
        labels = None if tokens is None else [repr(t)[1:-1] for t in tokens]
        shown = axis.get_major_formatter()
        if labels is not None and not (isinstance(shown, FixedFormatter) and list(shown.seq) == labels):
            axis.set_ticks(range(len(labels)), labels, **style)


def plot_masks(masks: dict):
    """One panel per boolean mask (T, S), True = may attend (drawn light)."""
    if not masks:
        raise ValueError("masks must be a non-empty dict of name -> (T, S) boolean tensor")
    fig, axes = new_figure(1, len(masks), width=3.0, height=3.0)
    axes = [axes] if len(masks) == 1 else list(axes)
    for ax, (name, m) in zip(axes, masks.items()):
        ax.imshow(m.float().cpu().numpy(), cmap="Greys_r", vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    return fig, axes


def plot_scaling_study(unscaled: dict, scaled: dict):
    """Three panels vs d_k: Var(q·k), mean softmax entropy and softmax-Jacobian norm, with and without 1/sqrt(d_k)."""
    fig, axes = new_figure(1, 3, width=4.0, height=3.2)
    d = unscaled["d_k"]
    axes[0].loglog(d, unscaled["dot_var"], "o-", label="Var(q·k)")
    axes[0].loglog(d, d, "k--", lw=1, label="y = d_k")
    axes[0].set_title("variance of q·k")
    for key, ax, title in (("entropy", axes[1], "softmax entropy (nats)"),
                           ("jacobian_norm", axes[2], "‖softmax Jacobian‖_F")):
        ax.semilogx(d, unscaled[key], "o-", label="q·k (unscaled)")
        ax.semilogx(d, scaled[key], "s-", label="q·k / sqrt(d_k)")
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("d_k")
        ax.legend(fontsize=8)
    return fig, axes


def plot_entropy_grid(entropy, *, uniform: float | None = None, ax=None, title: str = ""):
    """Layers × heads grid of mean attention entropy (nats), each cell annotated; `uniform` is noted in the title."""
    e = _entropy_grid(entropy)
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=0.6 * e.shape[1] + 2.5, height=0.5 * e.shape[0] + 1.5)
    im = ax.imshow(e.numpy(), cmap="magma", vmin=0.0, vmax=uniform, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="entropy (nats)")
    for i in range(e.shape[0]):
        for j in range(e.shape[1]):
            ax.text(j, i, "", ha="center", va="center", fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(e.shape[1]))
    ax.set_yticks(range(e.shape[0]))
    _annotate_entropy(ax, e, uniform, title)
    return fig, ax


def redraw_entropy_grid(ax, entropy, *, uniform: float | None = None, title: str = "") -> None:
    """Set the grid that plot_entropy_grid drew on `ax` to new entropies of the same shape, in place."""
    e = _entropy_grid(entropy)
    if e.numel() != len(ax.texts):
        raise ValueError(f"entropy must have the drawn grid's {len(ax.texts)} cells, got shape {tuple(e.shape)}")
    ax.images[0].set_data(e.numpy())
    ax.images[0].set_clim(0.0, e.max().item() if uniform is None else uniform)  # as imshow scales it
    _annotate_entropy(ax, e, uniform, title)


def _entropy_grid(entropy) -> torch.Tensor:
    e = entropy.detach().float().cpu() if isinstance(entropy, torch.Tensor) else torch.as_tensor(entropy).float()
    if e.dim() != 2:
        raise ValueError(f"entropy must be a (layers, heads) grid, got shape {tuple(e.shape)}")
    return e


def _annotate_entropy(ax, e, uniform, title) -> None:
    """Each cell's value, legible on its colour, and the title noting `uniform`."""
    for text, val in zip(ax.texts, e.flatten().tolist()):
        text.set_text(f"{val:.2f}")
        text.set_color("white" if uniform is None or val < 0.45 * uniform else "black")
    ax.set_title(title + (f"  (uniform = {uniform:.2f} nats)" if uniform is not None else ""))


def plot_attention_cost(rows: list, *, quadratic_ref: bool = True):
    """Log-log time (ms) and peak memory (MiB) vs sequence length T for each variant; dashed line ∝ T²."""
    if not rows:
        raise ValueError("rows must be a non-empty list of dicts with variant, T, ms, peak_bytes")
    fig, axes = new_figure(1, 2, width=5.0, height=3.6)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for name in variants:
        rs = [r for r in rows if r["variant"] == name]
        T = [r["T"] for r in rs]
        axes[0].loglog(T, [r["ms"] for r in rs], "o-", label=name)
        axes[1].loglog(T, [max(r["peak_bytes"], 1.0) / 2**20 for r in rs], "o-", label=name)
    if quadratic_ref:
        T = sorted({r["T"] for r in rows})
        scores = {r["T"]: r["scores_bytes"] for r in rows}
        axes[1].loglog(T, [scores[t] / 2**20 for t in T], "k--", lw=1, label="one T×T score matrix")
    axes[0].set_title("time per call")
    axes[0].set_ylabel("ms")
    axes[1].set_title("peak extra memory")
    axes[1].set_ylabel("MiB")
    for ax in axes:
        ax.set_xlabel("sequence length T")
        ax.legend(fontsize=8)
    return fig, axes


def plot_head_patterns(scores: dict, uniform: float | None = None):
    """scores {pattern: (L, H) mean weight} -> one annotated layers × heads grid per pattern, one colour scale."""
    fig, axes = new_figure(1, len(scores), width=3.0, height=2.9)
    axes = [axes] if len(scores) == 1 else list(axes)
    vmax = max(float(s.max()) for s in scores.values())
    for ax, (name, s) in zip(axes, scores.items()):
        im = ax.imshow(s.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
        for i in range(s.shape[0]):
            for j in range(s.shape[1]):
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if s[i, j] < 0.6 * vmax else "black")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_xticks(range(s.shape[1]))
        ax.set_yticks(range(s.shape[0]))
    axes[0].set_ylabel("layer")
    label = "mean attention weight" + (f" (uniform ≈ {uniform:.3f})" if uniform is not None else "")
    fig.colorbar(im, ax=axes, label=label, shrink=0.8)
    return fig, axes


def plot_dca_positions(plain, dca, chunk_len: int):
    """The relative distance RoPE sees for each (query, key), plain next to DCA: (T, T) each, -1 = masked."""
    import numpy as np

    fig, axes = new_figure(1, 2, width=4.2, height=3.8, constrained_layout=True)
    vmax = int(max(plain.max(), dca.max()))
    for ax, (title, rel) in zip(axes, {"plain RoPE: i - j": plain, f"DCA (chunks of {chunk_len})": dca}.items()):
        shown = np.ma.masked_less(rel.numpy(), 0)  # upper triangle left blank
        im = ax.imshow(shown, cmap="magma", vmin=0, vmax=vmax)
        for b in range(chunk_len, rel.shape[0], chunk_len):
            ax.axhline(b - 0.5, color="w", lw=0.6)
            ax.axvline(b - 0.5, color="w", lw=0.6)
        ax.set(title=title, xlabel="key position j", ylabel="query position i")
    fig.colorbar(im, ax=axes, label="relative position seen by RoPE", shrink=0.85)
    return fig, axes


def plot_sink_study(runs: list, uniform: float):
    """Gated vs ungated TinyLMs (benchmarks/bench_gated_attention.py): first-token weight per layer (one dot per seed,
    the mean as a line), and the largest |hidden state| over the median at the first token (solid) and elsewhere
    (dashed)."""
    import numpy as np

    fig, axes = new_figure(1, 2, width=4.6, height=3.3)
    for gated, colour in ((False, "tab:blue"), (True, "tab:orange")):
        arm = [r for r in runs if r["gated"] == gated]
        label = "gated" if gated else "no gate"
        weight = np.asarray([np.mean(r["first_token_weight"], axis=1) for r in arm])  # (seeds, layers)
        layers = np.arange(weight.shape[1])
        for w in weight:
            axes[0].plot(layers, w, "o", color=colour, alpha=0.5, ms=4)
        axes[0].plot(layers, weight.mean(0), "-", color=colour, label=f"{label} ({len(arm)} seeds)")
        for key, style, where in (("massive_first", "-", "token 0"), ("massive_rest", "--", "elsewhere")):
            values = np.asarray([r[key] for r in arm])  # (seeds, layers)
            axes[1].plot(layers, values.mean(0), style, color=colour, marker="o", ms=3, label=f"{label}, {where}")
    axes[0].axhline(uniform, color="k", ls=":", lw=1, label=f"uniform head ({uniform:.3f})")
    axes[0].set(xlabel="layer", ylabel="mean weight on the first token", title="attention on the first token",
                ylim=(0, None))
    axes[1].set(xlabel="layer", ylabel="largest |h| / median |h| (mean of seeds)", title="largest activations",
                ylim=(0, None))
    for ax in axes:
        ax.set_xticks(range(len(runs[0]["massive_first"])))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, axes
