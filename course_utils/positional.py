"""Positional encoding: sinusoidal, relative buckets, ALiBi, RoPE (+ its scalings) and length extrapolation.

RoPE follows transformers' conventions (rotate-half layout, `rope_parameters` dicts, ROPE_INIT_FUNCTIONS values),
so `rope_inv_freq` and `apply_rope` can be diffed against `transformers.modeling_rope_utils` line by line.
Papers: Vaswani et al. 2017 (sinusoidal), Shaw et al. 2018 (clipped relative), Raffel et al. 2020 (T5 buckets),
Su et al. 2021 (RoPE), Press et al. 2022 (ALiBi), Chen et al. 2023 (position interpolation),
bloc97 2023 (NTK-aware), emozilla 2023 (dynamic NTK), Peng et al. 2023 (YaRN), Meta 2024 (Llama 3.1 scaling).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from .checks import check_choice, check_int, check_number

# ---------------------------------------------------------------------------------------------------------
# absolute positions


def sinusoidal_positions(T: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal table of Vaswani et al.: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(same).

    Returns (T, d) float32.
    """
    check_int("T", T)
    check_int("d", d, 2)
    if d % 2:
        raise ValueError(f"d must be even (sin/cos pairs), got {d}")
    base = _check_base(base)
    pos = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = pos * inv_freq  # (T, d/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, d/2, 2)
    return pe.reshape(T, d).float()  # (T, d): sin, cos, sin, cos, ...


def sinusoidal_shift_matrix(k: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """The (d, d) matrix M_k with PE[p + k] = M_k @ PE[p] for every p: block-diagonal 2x2 rotations.

    It does not depend on p, which is why the sinusoidal table carries relative position linearly.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    check_int("d", d, 2)
    if d % 2:
        raise ValueError(f"d must be even, got {d}")
    base = _check_base(base)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    c, s = torch.cos(k * inv_freq), torch.sin(k * inv_freq)
    m = torch.zeros(d, d, dtype=torch.float64)
    # (sin(a+b), cos(a+b)) = [[cos b, sin b], [-sin b, cos b]] @ (sin a, cos a)
    m[0::2, 0::2] = torch.diag(c)
    m[0::2, 1::2] = torch.diag(s)
    m[1::2, 0::2] = torch.diag(-s)
    m[1::2, 1::2] = torch.diag(c)
    return m.float()


# ---------------------------------------------------------------------------------------------------------
# relative positions


def relative_positions(T: int, max_distance: int | None = None) -> torch.Tensor:
    """rel[i, j] = j - i (key minus query), clipped to [-max_distance, max_distance] as in Shaw et al.

    Returns (T, T) int64.
    """
    check_int("T", T)
    rel = torch.arange(T)[None, :] - torch.arange(T)[:, None]  # (T, T)
    if max_distance is not None:
        check_int("max_distance", max_distance)
        rel = rel.clamp(-max_distance, max_distance)
    return rel


def t5_relative_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                       max_distance: int = 128) -> torch.Tensor:
    """T5's bucket id for each relative position (key - query): exact for small distances, log-spaced beyond.

    relative_position: int tensor of any shape -> same shape, int64 in [0, num_buckets).
    """
    if not isinstance(relative_position, torch.Tensor) or relative_position.is_floating_point():
        raise TypeError("relative_position must be an integer torch.Tensor")
    check_int("num_buckets", num_buckets, 2)
    check_int("max_distance", max_distance, 2)
    n = num_buckets
    bucket = torch.zeros_like(relative_position, dtype=torch.long)
    if bidirectional:
        n //= 2  # half the buckets for keys after the query, half for keys before
        bucket += (relative_position > 0).long() * n
        dist = relative_position.abs()
    else:
        dist = (-relative_position).clamp(min=0)  # only the past counts
    max_exact = n // 2
    is_small = dist < max_exact
    log_ratio = torch.log(dist.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (n - max_exact)).long()
    large = large.clamp(max=n - 1)
    return bucket + torch.where(is_small, dist, large)


def transformer_xl_scores(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_r: torch.Tensor,
                          u: torch.Tensor, v: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Transformer-XL's relative attention scores (Dai et al. 2019, Sec. 3.3), causal, one head, no memory.

    A[i, j] = q_i.k_j (content) + q_i.r_(i-j) (content-position) + u.k_j (global content) + v.r_(i-j) (global
    position), with q = x w_q, k = x w_k and r_m = sinusoid(m) w_r: no absolute position anywhere.
    x (T, d); w_q, w_k, w_r (d, d_h); u, v (d_h,). Returns (T, T), -inf where j > i.
    """
    T, d = x.shape
    q, k = x @ w_q, x @ w_k  # (T, d_h)
    r = sinusoidal_positions(T, d, base).to(x.dtype) @ w_r  # (T, d_h): row m is distance m
    content = (q + u) @ k.T  # (T, T): terms (a) + (c)
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0)  # (T, T) i - j
    position = ((q + v) @ r.T).gather(1, distance)  # (T, T): terms (b) + (d), [i, j] reads column i - j
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return (content + position).masked_fill(future, float("-inf"))


def deberta_scores(x: torch.Tensor, w_qc: torch.Tensor, w_kc: torch.Tensor, w_qr: torch.Tensor, w_kr: torch.Tensor,
                   rel_emb: torch.Tensor) -> torch.Tensor:
    """DeBERTa's disentangled attention scores (He et al. 2021, eq. 4), one head, bidirectional.

    A[i, j] = Qc_i.Kc_j (content-to-content) + Qc_i.Kr_d(i,j) (content-to-position) + Kc_j.Qr_d(j,i)
    (position-to-content), divided by sqrt(3 d_h); d(i, j) = clip(i - j, -k, k - 1) + k indexes the 2k rows of
    rel_emb. x (T, d); w_* (d, d_h); rel_emb (2k, d). Returns (T, T).
    """
    T, k = x.shape[0], rel_emb.shape[0] // 2
    qc, kc = x @ w_qc, x @ w_kc  # (T, d_h)
    qr, kr = rel_emb @ w_qr, rel_emb @ w_kr  # (2k, d_h)
    delta = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(-k, k - 1) + k  # (T, T) in [0, 2k)
    c2c = qc @ kc.T
    c2p = (qc @ kr.T).gather(1, delta)  # [i, j] = Qc_i . Kr_delta(i, j)
    p2c = (kc @ qr.T).gather(1, delta).T  # [i, j] = Kc_j . Qr_delta(j, i)
    return (c2c + c2p + p2c) / math.sqrt(3 * qc.shape[-1])


# ---------------------------------------------------------------------------------------------------------
# ALiBi


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.): 2^(-8h/n) for h = 1..n when n is a power of two.

    Other n: the slopes of the closest lower power of two c, then every other slope of 2c. Returns (n_heads,).
    """
    check_int("n_heads", n_heads, allowed=">= 1")

    def power_of_two(n):
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    closest = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(closest)
    if closest < n_heads:
        slopes += power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, T: int) -> torch.Tensor:
    """ALiBi additive attention bias: bias[h, i, j] = -slope_h * |i - j| (the causal mask removes j > i).

    Returns (H, T, T) float32.
    """
    check_int("T", T)
    slopes = alibi_slopes(n_heads)  # (H,)
    dist = relative_positions(T).abs().float()  # (T, T)
    return -slopes[:, None, None] * dist[None]  # (H, T, T)


# ---------------------------------------------------------------------------------------------------------
# RoPE: inverse frequencies for each scaling type (one signature, as transformers' ROPE_INIT_FUNCTIONS)

_FACTOR_TYPES = ("linear", "ntk", "dynamic", "yarn", "llama3")
_ALLOWED_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "ntk": {"factor"},
    "dynamic": {"factor", "original_max_position_embeddings"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
             "mscale", "mscale_all_dim", "truncate"},
    "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"},
}
_REQUIRED_KEYS = {
    "default": set(), "linear": {"factor"}, "ntk": {"factor"},
    "dynamic": {"factor", "original_max_position_embeddings"},
    "yarn": {"factor", "original_max_position_embeddings"},
    "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"},
}


def _base_inv_freq(dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/dim), i = 0..dim/2-1: (dim/2,) float32, computed as transformers does."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _rope_default(dim, base, p, seq_len):
    return _base_inv_freq(dim, base), 1.0


def _rope_linear(dim, base, p, seq_len):
    """Position interpolation: positions divided by `factor`, i.e. every frequency divided by it."""
    return _base_inv_freq(dim, base) / p["factor"], 1.0


def _rope_ntk(dim, base, p, seq_len):
    """NTK-aware (static): enlarge the base so the lowest frequency is interpolated by `factor`, the highest kept."""
    return _base_inv_freq(dim, base * p["factor"] ** (dim / (dim - 2))), 1.0


def _rope_dynamic(dim, base, p, seq_len):
    """Dynamic NTK: the NTK base chosen from the current length (unchanged up to the trained length)."""
    original = p["original_max_position_embeddings"]
    factor = p["factor"]
    seq_len = original if seq_len is None else max(seq_len, original)
    base = base * ((factor * seq_len / original) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(dim, base), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature sqrt(1/t) = 0.1 * mscale * ln(s) + 1 (1 when s <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _rope_yarn(dim, base, p, seq_len):
    """YaRN: NTK-by-parts (interpolate low frequencies, keep high ones, ramp between) + attention temperature."""
    factor = p["factor"]
    original = p["original_max_position_embeddings"]
    attention_factor = p.get("attention_factor")
    mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast = p.get("beta_fast") or 32
    beta_slow = p.get("beta_slow") or 1

    def correction_dim(n_rotations):  # the dimension pair that completes n_rotations over `original` tokens
        return (dim * math.log(original / (n_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero in the ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)  # (dim/2,)
    keep = 1 - ramp  # 1: keep the original frequency (extrapolate), 0: divide it by factor (interpolate)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_extrapolation, inv_interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    return inv_interpolation * (1 - keep) + inv_extrapolation * keep, attention_factor


def _rope_llama3(dim, base, p, seq_len):
    """Llama 3.1: wavelengths above original/low_freq_factor divided by factor, below original/high_freq_factor kept."""
    inv_freq = _base_inv_freq(dim, base)
    factor, low_f, high_f = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    original = p["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = original / low_f, original / high_f
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low_f) / (high_f - low_f)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


ROPE_SCALINGS: dict[str, Callable] = {
    "default": _rope_default,
    "linear": _rope_linear,  # position interpolation (PI)
    "ntk": _rope_ntk,  # NTK-aware base change (not a transformers rope_type: it is "default" with a larger rope_theta)
    "dynamic": _rope_dynamic,
    "yarn": _rope_yarn,
    "llama3": _rope_llama3,
}


def _check_scaling(scaling, base: float) -> tuple[str, dict]:
    if scaling is None:
        return "default", {}
    if not isinstance(scaling, dict):
        raise TypeError(f"scaling must be None or a dict like {{'rope_type': 'linear', 'factor': 2.0}}, "
                        f"got {type(scaling).__name__}")
    p = dict(scaling)
    rope_type = p.pop("rope_type", p.pop("type", "default"))
    check_choice("rope_type", rope_type, sorted(ROPE_SCALINGS))
    theta = p.pop("rope_theta", None)
    if theta is not None and float(theta) != base:
        raise ValueError(f"scaling['rope_theta']={theta} disagrees with base={base}; pass the base once")
    unknown = set(p) - _ALLOWED_KEYS[rope_type] - {"partial_rotary_factor"}
    if unknown:  # real configs carry extra keys (e.g. linear with original_max_position_embeddings): transformers
        warnings.warn(f"ignoring keys {sorted(unknown)} that rope_type {rope_type!r} does not use; "  # warns too
                      f"it uses {sorted(_ALLOWED_KEYS[rope_type] | {'partial_rotary_factor'})}", stacklevel=3)
        p = {key: v for key, v in p.items() if key not in unknown}
    missing = _REQUIRED_KEYS[rope_type] - set(p)
    if missing:
        raise ValueError(f"rope_type {rope_type!r} needs the keys {sorted(missing)}")
    if rope_type in _FACTOR_TYPES:
        check_number("factor", p["factor"], 1,
                     allowed=f">= 1 for rope_type {rope_type!r} (it is the context extension)")
    if "original_max_position_embeddings" in p:
        check_int("original_max_position_embeddings", p["original_max_position_embeddings"])
    if rope_type == "llama3" and not p["high_freq_factor"] > p["low_freq_factor"]:
        raise ValueError(f"high_freq_factor must be > low_freq_factor, got {p['high_freq_factor']} "
                         f"and {p['low_freq_factor']}")
    return rope_type, p


def rope_inv_freq(head_dim: int, base: float = 10000.0, scaling: dict | None = None,
                  seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """RoPE inverse frequencies and attention factor, as transformers computes them.

    scaling: None or {"rope_type": "linear"|"ntk"|"dynamic"|"yarn"|"llama3", "factor": ..., ...} (rope_parameters form);
    keys a type does not use are ignored with a warning, as transformers does. seq_len: the current length (only
    "dynamic" uses it). Returns (inv_freq (head_dim * partial_rotary_factor / 2,) float32, attention_factor).
    """
    _check_head_dim(head_dim)
    base = _check_base(base)
    if seq_len is not None:
        check_int("seq_len", seq_len)
    rope_type, params = _check_scaling(scaling, base)
    fraction = check_number("partial_rotary_factor", params.pop("partial_rotary_factor", 1.0), 0, 1, low_open=True)
    dim = int(head_dim * fraction)  # only the first `dim` dims rotate (as transformers); dim/2 frequencies
    if dim < 2 or dim % 2:
        raise ValueError(f"head_dim * partial_rotary_factor must be an even int >= 2, got {head_dim} * {fraction}")
    inv_freq, attention_factor = ROPE_SCALINGS[rope_type](dim, base, params, seq_len)
    return inv_freq, float(attention_factor)


def rope_wavelengths(inv_freq: torch.Tensor) -> torch.Tensor:
    """Tokens per full turn of each rotary pair: 2*pi / inv_freq, (D/2,)."""
    if not isinstance(inv_freq, torch.Tensor) or inv_freq.dim() != 1:
        raise TypeError("inv_freq must be a 1-D torch.Tensor")
    return 2 * math.pi / inv_freq


def rope_score_bound(head_dim: int, base: float = 10000.0, max_distance: int = 4096,
                     scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's long-term decay (Su et al. 2021, Sec. 3.4.3): the relative upper bound of |q . k| at distance m.

    With S_j = sum_{i<j} exp(i m theta_i), the bound is (2/D) sum_j |S_j| (times max |q_i k_i| differences), summed
    in float64 over the float32 frequencies. Returns (distances (N,) int64, 1..max_distance log-spaced, bound (N,)).
    """
    check_int("max_distance", max_distance)
    inv_freq, _ = rope_inv_freq(head_dim, base, scaling)
    m = torch.unique(torch.logspace(0, math.log10(max_distance), 400).round().long())  # (N,)
    phase = m[:, None].double() * inv_freq.double()[None]  # (N, D/2)
    partial = torch.cumsum(torch.polar(torch.ones_like(phase), phase), dim=-1)  # S_1..S_{D/2}, (N, D/2)
    return m, partial.abs().mean(-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim (transformers' layout: pair i is (i, i + D/2))."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, attention_factor: float = 1.0):
    """cos and sin tables for `positions` (..., T): each (..., T, D), times attention_factor (float64 inv_freq -> float64)."""
    dtype = torch.float64 if inv_freq.dtype == torch.float64 else torch.float32  # float32 as transformers
    freqs = positions[..., None].to(dtype) * inv_freq.to(dtype)  # (..., T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, D)
    return emb.cos() * attention_factor, emb.sin() * attention_factor


def apply_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor,
               attention_factor: float = 1.0) -> torch.Tensor:
    """Rotate each pair (i, i + D/2) of x by angle position * inv_freq[i] (rotate-half convention).

    x (..., T, D); positions (T,) or (B, T) integer or float; inv_freq (D/2,). Returns x's shape and dtype.
    With x (B, H, T, D) and positions (B, T) the head dim is broadcast, as apply_rotary_pos_emb(unsqueeze_dim=1).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise TypeError("x must be a torch.Tensor of shape (..., T, D)")
    if not isinstance(positions, torch.Tensor) or positions.dim() not in (1, 2):
        raise TypeError("positions must be a torch.Tensor of shape (T,) or (B, T)")
    if not isinstance(inv_freq, torch.Tensor) or inv_freq.dim() != 1:
        raise TypeError("inv_freq must be a 1-D torch.Tensor of shape (D/2,)")
    T, D = x.shape[-2], x.shape[-1]
    if D % 2:
        raise ValueError(f"x's last dim must be even for RoPE, got {D}")
    if inv_freq.shape[0] != D // 2:
        raise ValueError(f"inv_freq must have D/2 = {D // 2} entries, got {inv_freq.shape[0]}")
    if positions.shape[-1] != T:
        raise ValueError(f"positions must have T = {T} entries in the last dim, got {positions.shape[-1]}")
    cos, sin = rope_cos_sin(positions, inv_freq, attention_factor)  # (..., T, D)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if positions.dim() == 2 and x.dim() == 4:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------------------------------------------------
# a loaded transformers model: change its RoPE, score long text, fine-tune briefly


def _rotary(model):
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "attention_scaling"):
            return module
    raise ValueError("model has no rotary embedding module (a module with inv_freq and attention_scaling)")


def rope_settings(model) -> dict:
    """{"head_dim", "base", "max_position_embeddings"} of a transformers RoPE model."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    params = getattr(cfg, "rope_parameters", None) or {}
    base = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return {"head_dim": head_dim, "base": float(base), "max_position_embeddings": cfg.max_position_embeddings}


def set_rope_scaling(model, scaling: dict | None, seq_len: int | None = None):
    """Put `rope_inv_freq(..., scaling, seq_len)` into the model's rotary embedding, in place; returns the model.

    `original_max_position_embeddings` defaults to the model's trained context. The frequencies stay fixed
    (no per-call dynamic update): "dynamic" is computed for `seq_len`. `scaling=None` restores plain RoPE.
    """
    s = rope_settings(model)
    if scaling is not None and isinstance(scaling, dict):
        scaling = dict(scaling)
        rope_type = scaling.get("rope_type", "default")
        if rope_type in ("dynamic", "yarn", "llama3"):
            scaling.setdefault("original_max_position_embeddings", s["max_position_embeddings"])
    inv_freq, attention_factor = rope_inv_freq(s["head_dim"], s["base"], scaling, seq_len)
    rotary = _rotary(model)
    dev = rotary.inv_freq.device
    rotary.inv_freq = inv_freq.to(dev)
    rotary.original_inv_freq = inv_freq.clone().to(dev)
    rotary.attention_scaling = attention_factor
    rotary.rope_type = "default"  # frozen: transformers' dynamic update must not overwrite our values
    return model


def heldout_token_stream(tokenizer, n_tokens: int, *, seed: int = 1234) -> torch.Tensor:
    """n_tokens of held-out text (pretraining_corpus with another seed, documents joined by EOS): (n_tokens,)."""
    from .data import pretraining_corpus

    check_int("n_tokens", n_tokens)
    ids, n_docs = [], 0
    while len(ids) < n_tokens:
        docs = pretraining_corpus(n_docs + 256, seed=seed)[n_docs:]  # same seed -> same prefix of documents
        n_docs += 256
        for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
            ids.extend(enc + [tokenizer.eos_token_id])
    return torch.tensor(ids[:n_tokens])


@torch.no_grad()
def row_position_nll(model, rows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Next-token cross-entropy (nats) of every row at every position: rows (N, T) -> (N, T-1)."""
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or rows.shape[1] < 2:
        raise TypeError("rows must be a (N, T) tensor of token ids with T >= 2")
    check_int("batch_size", batch_size)
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i: i + batch_size].to(dev)  # (B, T)
        logits = model(input_ids=batch).logits.float()  # (B, T, V)
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T-1)
        out.append(nll.cpu())
    return torch.cat(out)


def position_nll(model, rows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) at each position over rows (N, T): returns (T-1,)."""
    return row_position_nll(model, rows, batch_size).double().mean(0).float()


def dynamic_position_nll(model, rows: torch.Tensor, factor: float = 1.0, batch_size: int = 8,
                         per_row: bool = False) -> torch.Tensor:
    """position_nll with dynamic NTK roughly as generation sees it: frequencies are recomputed when the text outgrows

    L0, 2*L0, 4*L0, ...; the tokens in (end/2, end] are scored by a forward over the first `end` tokens with the
    frequencies chosen for length `end` (the first L0 tokens keep plain RoPE). rows (N, T) -> (T-1,), or (N, T-1)
    with per_row=True.
    """
    L0, T = rope_settings(model)["max_position_embeddings"], rows.shape[1]
    out = torch.empty(rows.shape[0], T - 1)
    start, end = 0, min(L0, T)
    while start < T - 1:
        set_rope_scaling(model, {"rope_type": "dynamic", "factor": factor}, seq_len=end)
        nll = row_position_nll(model, rows[:, :end], batch_size)  # (N, end-1)
        out[:, start: end - 1] = nll[:, start:]
        start, end = end - 1, min(2 * end, T)
    set_rope_scaling(model, None)
    return out if per_row else out.double().mean(0).float()


# The methods compared in the extrapolation lab: name -> (s = target length / trained length, L0) -> scaling.
EXTRAPOLATION_METHODS: dict[str, Callable[[float, int], dict | None]] = {
    "plain RoPE": lambda s, L0: None,
    "PI (linear)": lambda s, L0: {"rope_type": "linear", "factor": s},
    "NTK-aware": lambda s, L0: {"rope_type": "ntk", "factor": s},
    "dynamic NTK": lambda s, L0: {"rope_type": "dynamic", "factor": 1.0},
    "YaRN": lambda s, L0: {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L0},
}


def extrapolation_study(model, stream: torch.Tensor, multiples=(1, 2, 4, 8), methods: dict | None = None,
                        batch_size: int = 8, return_curves: bool = False, per_row: bool = False):
    """Held-out perplexity of `model` at each multiple of its trained length, for each RoPE scaling method.

    stream: (n_tokens,) token ids, cut into rows of each length (the same tokens for every length).
    Returns {method: {length: perplexity}} (and, with return_curves, {method: {length: per-position NLL (L-1,)}},
    or (N, L-1) per row with per_row=True); the model's RoPE is restored afterwards.
    """
    if not isinstance(stream, torch.Tensor) or stream.dim() != 1:
        raise TypeError("stream must be a 1-D tensor of token ids")
    methods = EXTRAPOLATION_METHODS if methods is None else methods
    L0 = rope_settings(model)["max_position_embeddings"]
    table, curves = {}, {}
    for name, make in methods.items():
        table[name], curves[name] = {}, {}
        for m in multiples:
            L = int(m * L0)
            n_rows = stream.numel() // L
            if n_rows < 1:
                raise ValueError(f"stream has {stream.numel()} tokens, fewer than one row of length {L}")
            rows = stream[: n_rows * L].view(n_rows, L)  # (N, L)
            scaling = make(m, L0)
            if scaling is not None and scaling.get("rope_type") == "dynamic":
                nll = dynamic_position_nll(model, rows, scaling["factor"], batch_size, per_row=True)
            else:
                set_rope_scaling(model, scaling, seq_len=L)
                nll = row_position_nll(model, rows, batch_size)  # (N, L-1)
            table[name][L] = math.exp(nll.double().mean().item())
            curves[name][L] = nll if per_row else nll.double().mean(0).float()
    set_rope_scaling(model, None)
    return (table, curves) if return_curves else table


def finetune_with_scaling(model, rows: torch.Tensor, scaling: dict | None, *, steps: int, batch_size: int = 4,
                          lr: float = 3e-4, generator: torch.Generator | None = None) -> tuple[object, list[float]]:
    """A copy of `model` with `scaling` applied, trained `steps` AdamW steps on random rows (N, T); (model, losses)."""
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_number("lr", lr, 0, low_open=True)
    tuned = copy.deepcopy(model)
    set_rope_scaling(tuned, scaling, seq_len=rows.shape[1])
    tuned.train()
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    dev = next(tuned.parameters()).device
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(rows), (batch_size,), generator=generator)
        batch = rows[idx].to(dev)  # (B, T)
        loss = tuned(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return tuned.eval(), losses


def with_sliding_window(model, window: int):
    """A copy of a transformers Qwen/Llama-style model whose every layer uses sliding-window attention of `window`."""
    check_int("window", window)
    cfg = copy.deepcopy(model.config)
    cfg.sliding_window = window
    cfg.use_sliding_window = True
    cfg.max_window_layers = 0
    cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    new = type(model)(cfg)
    new.load_state_dict(model.state_dict())
    return new.to(next(model.parameters()).device).eval()


# ---------------------------------------------------------------------------------------------------------
# argument checks


def _check_head_dim(head_dim) -> int:
    check_int("head_dim", head_dim, 2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (RoPE rotates pairs of dimensions), got {head_dim}")
    return head_dim


def _check_base(base) -> float:
    return check_number("base", base, 1, low_open=True, allowed="> 1")
