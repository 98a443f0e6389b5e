"""Lecture 03 (positional encoding) exercise checks: RoPE, ALiBi slopes, NTK-aware frequencies."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def check_apply_rope(apply_rope: Callable, trials: int = 3) -> None:
    """apply_rope(x, positions, inv_freq), x (..., T, D), rotate-half layout; compared with transformers."""
    def trial():
        from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

        gen = torch.Generator().manual_seed(301)
        for t in range(trials):
            D, T = 8 * (t + 1), 5 + t
            x = torch.randn(2, 3, T, D, generator=gen, dtype=torch.float64)
            positions = torch.randint(0, 2000, (T,), generator=gen)
            inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
            freqs = positions[:, None].double() * inv_freq  # (T, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
            ref, _ = apply_rotary_pos_emb(x, x, emb.cos()[None], emb.sin()[None])
            problem = compare("apply_rope(x, positions, inv_freq)", call(apply_rope, x.clone(), positions, inv_freq),
                              ref, atol=1e-8)
            if problem:
                return problem + f" (trial {t}, D={D}; pair i is (i, i + D/2), not (2i, 2i+1))"
        return None
    return run_check("apply_rope", trial)


def check_alibi_slopes(alibi_slopes: Callable) -> None:
    """alibi_slopes(n_heads) for power-of-two and other head counts; compared with BLOOM's ALiBi tensor."""
    def trial():
        from transformers.models.bloom.modeling_bloom import build_alibi_tensor

        for n in (1, 4, 8, 6, 12, 20):
            ref = build_alibi_tensor(torch.ones(1, 3), n, torch.float32)[:, 0, 1]  # slope * position 1
            got = call(alibi_slopes, n)
            got = torch.as_tensor(got, dtype=torch.float32) if not isinstance(got, torch.Tensor) else got
            problem = compare(f"alibi_slopes({n})", got.float(), ref, atol=1e-6)
            if problem:
                return problem
        return None
    return run_check("ALiBi slopes", trial)


def check_ntk_inv_freq(ntk_inv_freq: Callable) -> None:
    """ntk_inv_freq(head_dim, base, factor): NTK-aware RoPE frequencies (base * factor^(D/(D-2)))."""
    def trial():
        for head_dim, base, factor in [(64, 10000.0, 2.0), (128, 500000.0, 8.0), (16, 10000.0, 4.0)]:
            b = base * factor ** (head_dim / (head_dim - 2))
            ref = 1.0 / (b ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
            got = call(ntk_inv_freq, head_dim, base, factor)
            problem = compare(f"ntk_inv_freq({head_dim}, {base}, {factor})", got, ref, atol=0, rtol=1e-5)
            if problem:
                return problem
        return None
    return run_check("NTK-aware inverse frequencies", trial)
