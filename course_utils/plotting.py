"""Pure plotting helpers: each returns (fig, ax) and never writes files."""

from __future__ import annotations

import matplotlib.pyplot as plt


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 3.5, **kwargs):
    """A figure with a grid of axes, sized per panel: (fig, ax) or (fig, axes)."""
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True, **kwargs)
    return fig, ax


# ---- 01 attention plots (issue 3) ----

def plot_attention_weights(weights, tokens_q=None, tokens_k=None, *, ax=None, title: str = "", vmax=None):
    """Heatmap of one attention matrix weights (T, S), rows = queries, columns = keys; token labels optional."""
    import torch

    w = weights.detach().float().cpu() if isinstance(weights, torch.Tensor) else torch.as_tensor(weights).float()
    if w.dim() != 2:
        raise ValueError(f"weights must be a (T, S) matrix, got shape {tuple(w.shape)}")
    for name, toks, n in (("tokens_q", tokens_q, w.shape[0]), ("tokens_k", tokens_k, w.shape[1])):
        if toks is not None and len(toks) != n:
            raise ValueError(f"{name} must have {n} labels to match weights {tuple(w.shape)}, got {len(toks)}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=4.5, height=4.0)
    im = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    small = max(w.shape) <= 40
    if tokens_k is not None and small:
        ax.set_xticks(range(len(tokens_k)), [repr(t)[1:-1] for t in tokens_k], rotation=90, fontsize=7)
    if tokens_q is not None and small:
        ax.set_yticks(range(len(tokens_q)), [repr(t)[1:-1] for t in tokens_q], fontsize=7)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title)
    return fig, ax


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
    import torch

    e = entropy.detach().float().cpu() if isinstance(entropy, torch.Tensor) else torch.as_tensor(entropy).float()
    if e.dim() != 2:
        raise ValueError(f"entropy must be a (layers, heads) grid, got shape {tuple(e.shape)}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=0.6 * e.shape[1] + 2.5, height=0.5 * e.shape[0] + 1.5)
    im = ax.imshow(e.numpy(), cmap="magma", vmin=0.0, vmax=uniform, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for (i, j), val in ((ij, e[ij].item()) for ij in [(i, j) for i in range(e.shape[0]) for j in range(e.shape[1])]):
        ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7,
                color="white" if uniform is None or val < 0.6 * uniform else "black")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(e.shape[1]))
    ax.set_yticks(range(e.shape[0]))
    ax.set_title(title + (f"  (uniform = {uniform:.2f})" if uniform is not None else ""))
    return fig, ax


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


# ---- 02 norms plots (issue 4) ----

def plot_norm_axes(batch: int = 4, tokens: int = 5, features: int = 6):
    """Which entries of a (batch, tokens, features) tensor share one mean/variance, per norm: (fig, axes)."""
    import numpy as np

    fig, axes = new_figure(1, 3, width=3.6, height=3.2)
    rows = batch * tokens
    groups = {
        "BatchNorm: one feature,\nall batch x tokens": np.tile(np.arange(features), (rows, 1)),
        "LayerNorm: one token,\nall features": np.repeat(np.arange(rows)[:, None], features, 1),
        "RMSNorm: one token,\nall features (no mean)": np.repeat(np.arange(rows)[:, None], features, 1),
    }
    for ax, (title, g) in zip(axes, groups.items()):
        ax.imshow(g == g[0, 0], cmap="Blues", aspect="auto", vmin=0, vmax=1.3)
        for b in range(1, batch):
            ax.axhline(b * tokens - 0.5, color="k", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("feature")
        ax.set_ylabel("(sequence, token)")
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig, axes


def plot_grad_norms(results: dict):
    """results {n_layers: {placement: per-block grad norms}} -> one log-scale panel per depth: (fig, axes)."""
    fig, axes = new_figure(1, len(results), width=4.0, height=3.2)
    axes = [axes] if len(results) == 1 else list(axes)
    for ax, (n, by_pos) in zip(axes, results.items()):
        for pos, g in by_pos.items():
            ax.plot(range(1, len(g) + 1), g, marker="o", ms=3, label=pos)
        ax.set_yscale("log")
        ax.set_title(f"{n} blocks at initialization")
        ax.set_xlabel("block (1 = nearest the input)")
    axes[0].set_ylabel("gradient norm of the block")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig, axes


def plot_norm_loss_curves(curves: dict, title: str = "training loss"):
    """curves {label: per-step losses} -> (fig, ax); NaN (diverged) steps leave a gap."""
    fig, ax = new_figure(width=6.5, height=3.5)
    for label, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=label, ls="--" if "no warm" in label else "-")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig, ax


def plot_activations(x, curves: dict):
    """curves {name: (f(x), f'(x))} -> two panels, values and derivatives: (fig, axes)."""
    fig, axes = new_figure(1, 2, width=5.0, height=3.5)
    for name, (y, dy) in curves.items():
        axes[0].plot(x, y, label=name)
        axes[1].plot(x, dy, label=name)
    axes[0].set_title("f(x)")
    axes[1].set_title("f'(x)")
    for ax in axes:
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xlabel("x")
    axes[0].set_ylim(-1.5, 3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig, axes

# ---- 03 positional plots (issue 4) ----

def plot_position_matrix(m, title: str = "", xlabel: str = "", ylabel: str = "", cmap: str = "RdBu_r"):
    """A heatmap of a 2-D tensor with a colour bar: (fig, ax)."""
    fig, ax = new_figure(width=5.5, height=3.8)
    im = ax.imshow(m.detach().cpu().numpy() if hasattr(m, "detach") else m, aspect="auto", cmap=cmap)
    fig.colorbar(im, ax=ax)
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
    ax.legend(fontsize=8)
    return fig, ax


def plot_t5_buckets(rel, buckets: dict):
    """buckets {label: bucket ids for relative positions rel} -> step plot: (fig, ax)."""
    fig, ax = new_figure(width=6.0, height=3.2)
    for label, b in buckets.items():
        ax.step(rel, b, where="mid", label=label)
    ax.set_xlabel("relative position (key - query)")
    ax.set_ylabel("bucket id")
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


def plot_position_loss(curves: dict, train_len: int, bin_size: int = 64):
    """curves {label: per-position NLL (T-1,)} averaged in bins of bin_size positions: (fig, ax)."""
    import numpy as np

    fig, ax = new_figure(width=6.5, height=3.5)
    for label, nll in curves.items():
        n = (len(nll) // bin_size) * bin_size
        binned = nll[:n].reshape(-1, bin_size).mean(-1)
        ax.plot((np.arange(len(binned)) + 0.5) * bin_size, binned, label=label)
    ax.axvline(train_len, color="gray", ls=":", label="trained length")
    ax.set_xlabel("position in the sequence")
    ax.set_ylabel(f"mean NLL (bins of {bin_size})")
    ax.legend(fontsize=8)
    return fig, ax

# ---- 04 moe plots (issue 5) ----

def plot_expert_share(steps, share, *, layer: int = 0, ax=None, title: str = ""):
    """Stacked area of each expert's share of assignments over training. share (S, n_layers, E) or (S, E)."""
    import torch

    share = torch.as_tensor(share)
    if share.dim() == 3:
        share = share[:, layer]  # (S, E)
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.2)
    else:
        fig = ax.figure
    ax.stackplot(list(steps), share.t().numpy(), labels=[f"expert {e}" for e in range(share.shape[1])])
    ax.set(xlabel="training step", ylabel="share of assignments (stacked)", ylim=(0, 1), title=title)
    return fig, ax


def plot_drop_vs_capacity(capacity_factors, drops: dict, ax=None):
    """Fraction of dropped assignments vs capacity factor, one line per router (drops: name -> list of floats)."""
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.2)
    else:
        fig = ax.figure
    for name, values in drops.items():
        ax.plot(list(capacity_factors), list(values), marker="o", label=name)
    ax.set(xlabel="capacity factor", ylabel="assignments dropped", ylim=(-0.02, 1))
    ax.legend(fontsize=8)
    return fig, ax

# ---- 05 decoding plots (issue 6) ----

def plot_next_token_filter(view: dict, tokenizer, top: int = 15, ax=None):
    """Bars of the `top` most likely next tokens before (grey) and after (colour) filtering; view from filter_view."""
    import torch

    before, after = view["probs_before"], view["probs_after"]
    top = max(1, min(int(top), before.numel()))
    idx = torch.topk(before, top).indices
    labels = [repr(tokenizer.decode([int(i)]))[1:-1] or "·" for i in idx]
    fig, ax = new_figure(width=7.0, height=3.2) if ax is None else (ax.figure, ax)
    xs = range(top)
    ax.bar([x - 0.2 for x in xs], before[idx].tolist(), width=0.4, color="0.7", label="before")
    ax.bar([x + 0.2 for x in xs], after[idx].tolist(), width=0.4, color="C0", label="after filtering")
    ax.set_xticks(list(xs), labels, rotation=60, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title(f"kept {view['n_kept']} tokens, {view['mass_kept']:.1%} of the mass; "
                 f"entropy {view['entropy_before']:.2f} -> {view['entropy_after']:.2f} nats", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_repetition_table(rows: dict, metrics=("rep-4", "distinct-2", "loops")):
    """Grouped horizontal bars: one group per strategy (rows: name -> metric dict), one bar per metric."""
    names = list(rows)
    fig, ax = new_figure(width=7.0, height=0.35 * len(names) + 1.2)
    height = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        ax.barh([i + j * height for i in range(len(names))], [rows[n][metric] for n in names], height=height,
                label=metric)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig, ax


def plot_accuracy_vs_n(ns, curves: dict):
    """Accuracy against the number of samples N, one line per selection rule (curves: name -> list of accuracies)."""
    fig, ax = new_figure(width=5.5, height=3.2)
    for name, accs in curves.items():
        ax.plot(list(ns), accs, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N samples per question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax

# ---- 06 lora / memory plots (issue 7) ----

_MEMORY_PARTS = ("params", "grads", "optimizer", "activations", "overhead")


def plot_memory_breakdown(breakdowns: dict, *, gpu_lines: dict | None = None, title: str = "", ax=None):
    """Stacked bars (GB) of MemoryBreakdown components, one bar per label; optional horizontal GPU-size lines."""
    if not isinstance(breakdowns, dict) or not breakdowns:
        raise ValueError("breakdowns must be a non-empty dict {label: MemoryBreakdown}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure(width=max(5.0, 1.3 * len(breakdowns) + 3))
    labels = list(breakdowns)
    bottom = [0.0] * len(labels)
    for part in _MEMORY_PARTS:
        vals = [getattr(breakdowns[k], part) / 1e9 for k in labels]
        ax.bar(labels, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for name, gb in (gpu_lines or {}).items():
        ax.axhline(gb, ls="--", lw=0.8, color="gray")
        ax.text(len(labels) - 0.5, gb, f" {name}", va="bottom", ha="right", fontsize=7, color="gray")
    ax.set_ylabel("GB (1e9 bytes)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_rank_sweep(losses_by_rank: dict, *, ax=None):
    """Training-loss curves for each LoRA rank {r: [loss per step]}."""
    if not isinstance(losses_by_rank, dict) or not losses_by_rank:
        raise ValueError("losses_by_rank must be a non-empty dict {rank: list of losses}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure()
    for r, losses in losses_by_rank.items():
        ax.plot(range(1, len(losses) + 1), losses, label=f"r = {r}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend()
    return fig, ax


def plot_quant_error(errors: dict, *, ax=None):
    """Grouped bars of relative RMSE: {weights name: {format: error}}."""
    if not isinstance(errors, dict) or not errors:
        raise ValueError("errors must be a non-empty dict {weights name: {format: relative_rmse}}")
    fig, ax = (ax.figure, ax) if ax is not None else new_figure()
    groups = list(errors)
    kinds = list(next(iter(errors.values())))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        ax.bar([i + j * width for i in range(len(groups))], [errors[g][kind] for g in groups], width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.set_ylabel("relative RMSE of the round trip")
    ax.legend()
    return fig, ax

# ---- 07 sft plots (issue 8) ----

def plot_loss_curves(curves: dict, *, title: str = "training loss", smooth: int = 1):
    """One line per run: {name: [loss per step]}; `smooth` = moving-average window. Returns (fig, ax)."""
    import numpy as np

    fig, ax = new_figure()
    for name, ys in curves.items():
        ys = np.asarray(ys, dtype=float)
        if smooth > 1 and len(ys) >= smooth:
            ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(len(ys)) + 1, ys, label=name)
    ax.set(xlabel="step", ylabel="loss (nats / token)", title=title, yscale="log")
    ax.legend()
    return fig, ax


def plot_family_accuracy(results: dict):
    """Grouped bars: {run name: {family: accuracy}}. Returns (fig, ax)."""
    import numpy as np

    fig, ax = new_figure(width=7)
    families = list(next(iter(results.values())))
    width = 0.8 / len(results)
    for i, (name, acc) in enumerate(results.items()):
        ax.bar(np.arange(len(families)) + i * width, [acc.get(f, 0.0) for f in families], width, label=name)
    ax.set_xticks(np.arange(len(families)) + 0.4 - width / 2, families)
    ax.set(ylabel="exact match", ylim=(0, 1.05), title="test accuracy per task family")
    ax.legend(fontsize=8)
    return fig, ax


def plot_attention_mask(mask, *, title: str = "may attend (True)"):
    """A (T, T) boolean mask as an image (query rows, key columns). Returns (fig, ax)."""
    fig, ax = new_figure(width=4, height=4)
    ax.imshow(mask, cmap="Blues", interpolation="nearest")
    ax.set(xlabel="key position", ylabel="query position", title=title)
    return fig, ax



# ---- 08 dpo plots (issue 9) ----

def plot_preference_runs(runs: dict, keys: tuple[str, ...] = ("loss", "acc", "margin", "logp_chosen", "logp_rejected"),
                         smooth: int = 5):
    """One panel per metric, one line per run; runs maps a name to a train.TrainResult (losses + metrics)."""
    import numpy as np

    fig, axes = new_figure(1, len(keys), width=3.2, height=2.8)
    axes = np.atleast_1d(axes)
    for name, res in runs.items():
        for ax, key in zip(axes, keys):
            ys = np.array(res.losses if key == "loss" else [m.get(key, np.nan) for m in res.metrics], dtype=float)
            if smooth > 1 and len(ys) >= smooth:
                ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.arange(len(ys)) + (smooth - 1 if len(ys) < len(res.losses) else 0), ys, label=name)
    for ax, key in zip(axes, keys):
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig, axes


# ---- 09 grpo plots (issue 10) ----

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
    import numpy as np

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
