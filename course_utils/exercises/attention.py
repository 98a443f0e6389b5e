"""Lecture 01 (attention) exercise checks: causal attention, repeat_kv, the sharpest head."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .runner import call, compare, run_check


def check_causal_attention(causal_attention: Callable, trials: int = 4) -> None:
    """causal_attention(q, k, v) -> out (..., T, Dv): softmax(q kᵀ/sqrt(D)) v with a causal mask; vs float64 torch."""
    def trial():
        gen = torch.Generator().manual_seed(101)
        for t in range(trials):
            B, H, T, D = 1 + t % 2, 1 + t, 2 + 3 * t, 4 * (t + 1)
            q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64) * (1 + 3 * t) for _ in range(3))
            expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            problem = compare("causal_attention(q, k, v)", call(causal_attention, q.clone(), k.clone(), v.clone()),
                              expected, atol=1e-6)
            if problem:
                return problem + f" (trial {t}, q of shape {tuple(q.shape)})"
        return None
    return run_check("causal attention", trial)


def check_repeat_kv(repeat_kv: Callable, trials: int = 4) -> None:
    """repeat_kv(x (B, H_kv, S, D), n_rep) -> (B, H_kv·n_rep, S, D), KV head h serving query heads h·n_rep …"""
    def trial():
        gen = torch.Generator().manual_seed(202)
        for t, (h_kv, n_rep) in enumerate([(1, 1), (2, 2), (1, 4), (3, 2)][:trials]):
            x = torch.randn(2, h_kv, 5, 3, generator=gen)
            problem = compare(f"repeat_kv(x, {n_rep})", call(repeat_kv, x.clone(), n_rep),
                              torch.repeat_interleave(x, n_rep, dim=1), atol=0.0, rtol=0.0)
            if problem:
                hint = " (each KV head must be repeated n_rep times in a row: heads 0,0,1,1 not 0,1,0,1)"
                return problem + f" for H_kv={h_kv}, n_rep={n_rep}" + (hint if "differs" in problem else "")
        return None
    return run_check("repeat_kv", trial)


def check_sharpest_head(sharpest_head: Callable, trials: int = 3) -> None:
    """sharpest_head(weights (L, H, T, S)) -> (entropy (L, H) mean over query rows in nats, (layer, head) of the
    lowest-entropy head). Causal weights contain exact zeros: 0·log 0 must count as 0."""
    def trial():
        gen = torch.Generator().manual_seed(303)
        for t in range(trials):
            L, H, T = 2 + t, 3 + t, 6
            logits = torch.randn(L, H, T, T, generator=gen, dtype=torch.float64)
            logits = logits * torch.rand(L, H, 1, 1, generator=gen, dtype=torch.float64) * 6  # sharp and diffuse
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            w = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
            expected = torch.special.entr(w).sum(-1).mean(-1)  # (L, H)
            got = call(sharpest_head, w.clone())
            if not isinstance(got, tuple) or len(got) != 2:
                return "return a pair (entropy grid, (layer, head))"
            problem = compare("entropy grid", got[0], expected, atol=1e-6)
            if problem:
                nan = isinstance(got[0], torch.Tensor) and bool(torch.isnan(got[0]).any())
                return problem + (" (NaN: 0·log 0 must be 0; see torch.special.entr)" if nan else "")
            idx = divmod(int(expected.argmin()), H)
            try:
                got_idx = tuple(int(x) for x in got[1])
            except (TypeError, ValueError):
                return f"the second item should be (layer, head), got {got[1]!r}"
            if got_idx != idx:
                return f"sharpest head should be (layer, head) = {idx}, got {got_idx}"
        return None
    return run_check("sharpest head", trial)
