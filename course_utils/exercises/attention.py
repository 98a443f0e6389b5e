"""Lecture 01 (attention) exercise checks: causal attention, a KV-cached decode step, the sharpest head, induction."""

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
            got = call(causal_attention, q.clone(), k.clone(), v.clone())
            problem = compare("causal_attention(q, k, v)", got, expected, atol=1e-6)
            if problem and isinstance(got, torch.Tensor) and got.shape == expected.shape:
                hints = {"unscaled": (F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0),
                                      "the scores need the 1/sqrt(D) scale"),
                         "unmasked": (F.scaled_dot_product_attention(q, k, v), "the causal mask is missing: "
                                      "query i may only see keys j <= i"),
                         "upper": (F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(
                             T, T, dtype=torch.bool).triu()), "the mask is flipped: keep j <= i (tril), not j >= i")}
                for ref, hint in hints.values():
                    if compare("", got, ref, atol=1e-6) is None:
                        return problem + f". Hint: {hint}."
            if problem:
                return problem + f" (trial {t}, q of shape {tuple(q.shape)})"
        return None
    return run_check("causal attention", trial)


def check_decode_step(decode_step: Callable) -> None:
    """decode_step(q, k_new, v_new, cache) -> (out, cache): one generated token with a KV cache.

    q, k_new, v_new (B, H, 1, D); cache = (keys, values), each (B, H, S, D) (S = 0 at the start). Fed one token at a
    time, the outputs must equal full causal attention over the whole sequence (float64 torch SDPA).
    """
    def trial():
        gen = torch.Generator().manual_seed(404)
        B, H, T, D = 2, 3, 7, 8
        q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64) * 2 for _ in range(3))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        cache = (k[:, :, :0], v[:, :, :0])
        outs = []
        for t in range(T):
            result = call(decode_step, q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache)
            if not isinstance(result, tuple) or len(result) != 2:
                return "return a pair (out, cache)"
            out, cache = result
            if not isinstance(cache, tuple) or len(cache) != 2 or not all(isinstance(c, torch.Tensor) for c in cache):
                return "the cache must be a pair of tensors (keys, values)"
            if cache[0].shape != (B, H, t + 1, D):
                return (f"after {t + 1} steps the key cache should be (B, H, {t + 1}, D) = {(B, H, t + 1, D)}, got "
                        f"{tuple(cache[0].shape)}. Hint: append the new key and value (torch.cat on dim -2) and "
                        f"return the longer cache.")
            outs.append(out)
        got = torch.cat(outs, dim=-2) if all(isinstance(o, torch.Tensor) for o in outs) else outs
        problem = compare("outputs over all steps", got, expected, atol=1e-6)
        if problem and isinstance(got, torch.Tensor) and got.shape == expected.shape:
            first_key_only = v[:, :, :1].expand(B, H, T, D)
            hints = [(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0),
                      "the scores need the 1/sqrt(D) scale"),
                     (first_key_only, "the single new query may see every cached key; a causal mask built for a "
                      "(1, S) score row keeps only the first key, so use no mask at all")]
            for ref, hint in hints:
                if compare("", got, ref, atol=1e-6) is None:
                    return problem + f". Hint: {hint}."
            strictly_earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)
            strictly_earlier[0, 0] = True  # row 0 has no earlier key; compared from row 1 on
            before_append = F.scaled_dot_product_attention(q, k, v, attn_mask=strictly_earlier)
            if compare("", got[..., 1:, :], before_append[..., 1:, :], atol=1e-6) is None:
                return problem + ". Hint: append the new key and value to the cache first, then attend: the new token sees itself."
        return problem
    return run_check("KV-cached decode step", trial)


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


def check_induction_score(induction_score: Callable) -> None:
    """induction_score(weights (L, H, T, T), period) -> (L, H): mean weight from each query in the repeated half on
    the token that followed the previous occurrence of its own token; compared with attention.head_pattern_scores."""
    def trial():
        from ..attention import head_pattern_scores

        gen = torch.Generator().manual_seed(17)
        for period, T in [(4, 8), (5, 12)]:
            w = torch.softmax(torch.randn(2, 3, T, T, generator=gen).masked_fill(
                torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")), dim=-1)  # causal weights
            ref = head_pattern_scores(w, period)["induction"]
            got = call(induction_score, w, period)
            name = f"induction_score(weights, period={period})"
            problem = compare(name, got, ref, atol=1e-6)
            if problem and isinstance(got, torch.Tensor) and got.shape == ref.shape:
                i = torch.arange(period, T)
                if compare(name, got, w[..., i, i - period].mean(-1), atol=1e-6) is None:
                    return problem + (". Hint: you scored the previous occurrence itself; an induction head attends "
                                      "to the token AFTER it (key i - period + 1).")
                return problem + ". Hint: average only over queries i = period .. T-1 (the repeated half)."
            if problem:
                return problem
        return None
    return run_check("induction score", trial)
