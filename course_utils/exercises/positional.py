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


def _yarn_ramp_reference(head_dim: int, base: float, original: int, factor: float) -> torch.Tensor:
    """Share of each pair's frequency that YaRN interpolates, read back from transformers' YaRN frequencies."""
    from transformers import Qwen3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = Qwen3Config(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                      max_position_embeddings=int(original * factor),
                      rope_parameters={"rope_type": "yarn", "factor": factor, "rope_theta": base,
                                       "original_max_position_embeddings": original})
    yarn, _ = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
    plain = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return ((plain - yarn.double()) / (plain - plain / factor)).clamp(0, 1)  # 0 = kept, 1 = divided by factor


def check_yarn_ramp(yarn_ramp: Callable) -> None:
    """yarn_ramp(head_dim, base, original, beta_fast=32, beta_slow=1) -> (head_dim/2,) share interpolated per pair:
    0 for pairs that turn more than beta_fast times in `original` tokens, 1 below beta_slow turns, linear between."""
    def trial():
        for head_dim, base, original in [(64, 10000.0, 256), (128, 500000.0, 4096), (32, 10000.0, 64)]:
            ref = _yarn_ramp_reference(head_dim, base, original, 8.0)
            got = call(yarn_ramp, head_dim, base, original)
            name = f"yarn_ramp({head_dim}, {base:g}, {original})"
            problem = compare(name, got, ref, atol=1e-5)
            if problem and isinstance(got, torch.Tensor) and got.shape == ref.shape:
                if compare(name, 1 - got, ref, atol=1e-5) is None:
                    return problem + ". Hint: you returned the share KEPT; fast pairs (many turns) must get 0."
                if got.min() < 0 or got.max() > 1:
                    return problem + ". Hint: clamp the ramp to [0, 1]."
                return problem + (". Hint: a pair's number of turns in `original` tokens is original / wavelength;"
                                  " transformers rounds the low boundary down and the high one up (truncate=True).")
            if problem:
                return problem
        return None
    return run_check("YaRN ramp", trial)


def check_wavelength_stretch(wavelength_stretch: Callable) -> None:
    """wavelength_stretch(method, head_dim, factor) -> (head_dim/2,) new wavelength / old, predicted by hand for
    method "linear" (PI) and "ntk"; compared with the wavelengths positional.rope_inv_freq measures."""
    from ..positional import rope_inv_freq, rope_wavelengths

    def trial():
        for method in ("linear", "ntk"):
            for head_dim, factor in [(64, 8.0), (16, 2.0)]:
                plain = rope_wavelengths(rope_inv_freq(head_dim)[0].double())
                scaled = rope_wavelengths(rope_inv_freq(head_dim, scaling={"rope_type": method, "factor": factor})[0]
                                          .double())
                ref = scaled / plain
                got = call(wavelength_stretch, method, head_dim, factor)
                name = f"wavelength_stretch({method!r}, {head_dim}, {factor:g})"
                problem = compare(name, got, ref, atol=0, rtol=1e-4)
                if problem and isinstance(got, torch.Tensor) and got.shape == ref.shape:
                    if compare(name, 1 / got, ref, atol=0, rtol=1e-4) is None:
                        return problem + ". Hint: dividing a frequency by s multiplies the wavelength by s."
                    if method == "ntk":
                        return problem + (". Hint: NTK multiplies the base by s^(D/(D-2)); pair i's wavelength grows"
                                          " by that to the power 2i/D, so the slowest pair gets exactly s.")
                if problem:
                    return problem
        return None
    return run_check("wavelength stretch", trial)
