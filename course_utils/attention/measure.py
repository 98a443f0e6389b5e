"""What the attention lecture measures: the sqrt(d_k) study, the KV cache's speed-up, time and peak memory of each
attention variant, and the attention maps (entropy per head, attention sinks) of a real model."""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .efficient import linear_attention, tiled_attention
from ..checks import check_choice, check_int, check_number, check_tensor
from .mechanism import attention_entropy, causal_mask, scaled_dot_product_attention

# ---------------------------------------------------------------------------------------------------------------
# why divide by sqrt(d_k)


def scaling_study(d_ks, *, n_keys: int = 16, n_rows: int = 2000, temperature: float = 1.0,
                  scaled: bool = True, generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """For unit-variance q, k of each width d_k: variance of q·k, mean softmax entropy (nats) over n_keys keys, and
    mean Frobenius norm of the softmax Jacobian diag(p) − p pᵀ. Logits are q·k / (temperature·sqrt(d_k)) when
    `scaled`, else q·k / temperature. Returns lists aligned with d_ks (float64 math)."""
    d_ks = list(d_ks)
    if not d_ks:
        raise ValueError("d_ks must be a non-empty list of positive ints")
    for d in d_ks:
        check_int("d_k", d)
    check_int("n_keys", n_keys, 2)
    check_int("n_rows", n_rows, 2)
    check_number("temperature", temperature, 0, low_open=True)
    out = {"d_k": d_ks, "dot_var": [], "entropy": [], "jacobian_norm": []}
    for d in d_ks:
        q = torch.randn(n_rows, 1, d, generator=generator, dtype=torch.float64)
        k = torch.randn(n_rows, n_keys, d, generator=generator, dtype=torch.float64)
        dots = (q * k).sum(-1)  # (n_rows, n_keys), each q·k a sum of d unit-variance products
        logits = dots / (temperature * (math.sqrt(d) if scaled else 1.0))
        p = torch.softmax(logits, dim=-1)
        jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n_rows, n_keys, n_keys), d softmax / d logits
        out["dot_var"].append(dots.var().item())
        out["entropy"].append(attention_entropy(p).mean().item())
        out["jacobian_norm"].append(torch.linalg.matrix_norm(jac).mean().item())
    return out


# ---------------------------------------------------------------------------------------------------------------
# the KV cache's speed-up, measured


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding with or without the KV cache (no EOS stop, so both runs do the same work).

    Without the cache every step re-runs the whole prefix (cost grows with the prefix); with it, one token per step.
    input_ids (1, T) -> (1, T + max_new_tokens).
    """
    check_tensor("input_ids", input_ids, min_dim=2)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    check_int("max_new_tokens", max_new_tokens)
    ids, past, step_input = input_ids, None, input_ids
    for _ in range(max_new_tokens):
        if use_cache:
            out = model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
        else:
            out = model(input_ids=ids, use_cache=False)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, nxt], dim=-1)
        step_input = nxt
    return ids


def kv_cache_speedup(model, input_ids: torch.Tensor, new_tokens, *, repeats: int = 1) -> list[dict]:
    """For each n in new_tokens: tokens/s of greedy_decode with and without the cache, and whether the tokens match."""
    rows = []
    for n in new_tokens:
        check_int("new_tokens", n)
        times = {}
        for use_cache in (True, False):
            best, ids = float("inf"), None
            for _ in range(repeats):
                t0 = time.perf_counter()
                ids = greedy_decode(model, input_ids, n, use_cache=use_cache)
                best = min(best, time.perf_counter() - t0)
            times[use_cache] = (best, ids)
        rows.append({"new_tokens": n, "tok_s_cache": n / times[True][0], "tok_s_no_cache": n / times[False][0],
                     "speedup": times[False][0] / times[True][0],
                     "same_tokens": bool(torch.equal(times[True][1], times[False][1]))})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the cost of each attention variant: time and peak memory


def _naive(q, k, v, causal):
    mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None
    return scaled_dot_product_attention(q, k, v, mask)[0]


def _sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _tiled(q, k, v, causal):
    return tiled_attention(q, k, v, causal=causal, block_q=256, block_k=256)


def _linear(q, k, v, causal):
    return linear_attention(q, k, v, causal=causal)


# Variants compared in the cost section: one signature fn(q, k, v, causal) -> out.
ATTENTION_VARIANTS: dict[str, Callable] = {"naive": _naive, "sdpa": _sdpa, "tiled": _tiled, "linear": _linear}


def _rss_bytes() -> tuple[int, int] | None:
    """(current RSS, peak RSS since the last reset) of this process from /proc (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            txt = f.read()
        get = lambda key: int(re.search(key + r":\s+(\d+) kB", txt).group(1)) * 1024  # noqa: E731
        return get("VmRSS"), get("VmHWM")
    except (OSError, AttributeError):
        return None


_MALLOC_PINNED = False


def _pin_malloc_thresholds() -> None:
    """Make glibc return large freed blocks to the OS at once (fixed mmap/trim thresholds), so the resident size
    tracks live memory; by default glibc raises its mmap threshold after frees and keeps freed blocks resident."""
    global _MALLOC_PINNED
    if _MALLOC_PINNED:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: blocks >= 128 KiB get their own mapping
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
    _MALLOC_PINNED = True


def peak_memory_bytes(fn: Callable[[], object]) -> float:
    """Peak growth of this process's resident memory while fn() runs (Linux: resets VmHWM via /proc/self/clear_refs).

    Counts every allocation, the library's internal buffers included; nan where /proc is unavailable."""
    if not sys.platform.startswith("linux"):
        return float("nan")
    _pin_malloc_thresholds()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    before = _rss_bytes()
    result = fn()
    after = _rss_bytes()
    del result
    if before is None or after is None:
        return float("nan")
    return float(max(after[1] - before[0], 0))


def benchmark_attention(lengths, variants=None, *, batch: int = 1, heads: int = 4, head_dim: int = 64,
                        causal: bool = True, repeats: int = 3, device="cpu", dtype=torch.float32,
                        seed: int = 0, measure_memory: bool = True) -> list[dict]:
    """Median time (ms) and peak memory (bytes) of each attention variant at each sequence length T.

    variants: names from ATTENTION_VARIANTS (default all but "linear"). Returns rows {variant, T, ms, peak_bytes,
    scores_bytes} where scores_bytes = B·H·T²·bytes is the estimate of one materialized score matrix."""
    names = list(variants) if variants is not None else ["naive", "sdpa", "tiled"]
    for name in names:
        check_choice("variant", name, sorted(ATTENTION_VARIANTS))
    check_int("repeats", repeats)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for T in lengths:
        check_int("T", T)
        q, k, v = (torch.randn(batch, heads, T, head_dim, generator=gen).to(device=device, dtype=dtype)
                   for _ in range(3))
        for name in names:
            fn = ATTENTION_VARIANTS[name]
            with torch.no_grad():
                fn(q, k, v, causal)  # warm-up
                times = []
                for _ in range(repeats):
                    if q.device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    fn(q, k, v, causal)
                    if q.device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                if not measure_memory:
                    peak = float("nan")
                elif q.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    fn(q, k, v, causal)
                    torch.cuda.synchronize()
                    peak = float(torch.cuda.max_memory_allocated() - base)
                else:
                    peak = peak_memory_bytes(lambda: fn(q, k, v, causal))
            rows.append({"variant": name, "T": T, "ms": 1000 * statistics.median(times), "peak_bytes": peak,
                         "scores_bytes": batch * heads * T * T * q.element_size()})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# attention maps of a real model: entropy per layer and head, attention sinks


def attention_maps(model, tokenizer, text: str, *, max_tokens: int = 64) -> dict:
    """Run `text` through an eager-attention model with output_attentions=True.

    Returns {"tokens": list[str] (T), "weights": (L, H, T, T) float tensor, "entropy": (L, H) mean row entropy
    (nats), "uniform_entropy": float, the same mean for uniform attention over the allowed keys, "causal": bool,
    "sink": (L,) mean weight on the first token, "truncated": bool, "note": str}. Long inputs keep max_tokens tokens.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"text must contain at least one non-space character, got {text!r}")
    check_int("max_tokens", max_tokens, 2)
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"]
    truncated = ids.shape[1] > max_tokens
    notes = []
    if truncated:
        notes.append(f"input has {ids.shape[1]} tokens; showing the first {max_tokens}")
        ids = ids[:, :max_tokens]
    if ids.shape[1] == 1:
        notes.append("one token attends only to itself: every weight is 1 and every entropy 0")
    note = "; ".join(notes)
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=ids.to(dev), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise ValueError("the model returned no attention weights; load it with attn_implementation='eager'")
    weights = torch.stack([a[0].float().cpu() for a in out.attentions])  # (L, H, T, T)
    T = weights.shape[-1]
    causal = T > 1 and bool(torch.all(weights.triu(1) == 0))  # a decoder puts no weight above the diagonal
    n_keys = torch.arange(1, T + 1, dtype=torch.float64) if causal else torch.full((T,), float(T), dtype=torch.float64)
    rows = slice(1, None) if causal and T > 1 else slice(None)  # causal row 0 sees only itself: trivially sharp
    entropy = attention_entropy(weights.double())[..., rows].mean(-1).float()  # (L, H)
    sink = weights[..., rows, 0].mean(dim=(-1, -2))  # (L,)
    tokens = [tokenizer.decode([t]) for t in ids[0].tolist()]
    return {"tokens": tokens, "weights": weights, "entropy": entropy,
            "uniform_entropy": torch.log(n_keys[rows]).mean().item(), "causal": causal, "sink": sink,
            "sink_uniform": (1.0 / n_keys[rows]).mean().item(), "truncated": truncated, "note": note}


# ---------------------------------------------------------------------------------------------------------------
# a gallery of head patterns: previous-token, self, first-token and induction heads


def head_pattern_scores(weights: torch.Tensor, period: int) -> dict[str, torch.Tensor]:
    """Mean weight each head puts on a pattern, for sequences made of one random block of `period` tokens repeated.

    weights (L, H, T, T) or (N, L, H, T, T) with T >= 2 * period (averaged over N). Queries in the repeated part
    (positions period..T-1) only. Returns {"previous token": weight on key i-1, "self": on key i, "first token":
    on key 0, "induction": on key i - period + 1 — the token that followed the previous occurrence of the current
    token (Olsson et al. 2022)}, each (L, H).
    """
    check_tensor("weights", weights, min_dim=4, floating=True)
    w = weights if weights.dim() == 5 else weights[None]
    T = w.shape[-1]
    check_int("period", period, 2)
    if T < 2 * period:
        raise ValueError(f"weights must cover at least two periods: T = {T} < 2 * period = {2 * period}")
    i = torch.arange(period, T)  # queries in the repeated part
    pick = lambda keys: w[..., i, keys].mean(dim=(0, -1))  # noqa: E731  (L, H)
    return {"previous token": pick(i - 1), "self": pick(i), "first token": pick(torch.zeros_like(i)),
            "induction": pick(i - period + 1)}


def repeated_sequence_study(model, vocab_size: int, period: int, n: int = 16, *, seed: int = 0) -> dict:
    """Run an eager-attention model on n sequences, each a random block of `period` token ids from [0, vocab_size)
    repeated twice. Returns {"weights": (n, L, H, 2 * period, 2 * period), "nll": (n, 2 * period - 1) next-token
    loss in nats}: a model that copies in context predicts the second copy far better than the first."""
    check_int("vocab_size", vocab_size, 2)
    check_int("n", n)
    gen = torch.Generator().manual_seed(seed)
    block = torch.randint(0, vocab_size, (n, period), generator=gen)
    ids = torch.cat([block, block], dim=1)
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=ids.to(dev), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise ValueError("the model returned no attention weights; load it with attn_implementation='eager'")
    nll = F.cross_entropy(out.logits[:, :-1].float().transpose(1, 2).cpu(), ids[:, 1:], reduction="none")
    return {"weights": torch.stack([a.float().cpu() for a in out.attentions], dim=1), "nll": nll}
