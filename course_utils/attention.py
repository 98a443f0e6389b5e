"""Attention from scratch: scaled dot-product attention, masks, MHA/GQA/MQA with a KV cache, the online-softmax
(FlashAttention-style) tiled form, linear attention, attention entropy, and the measurements the lecture makes.

Conventions: shapes use B batch, H heads, T query length, S key length, D head dim. Masks are boolean with
True = may attend. Entropies are in nats.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# argument checks


def _check_tensor(name: str, x, *, min_dim: int = 1, floating: bool = True) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_int(name: str, x, *, low: int = 1) -> None:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")


def _check_mask(mask, scores_shape: tuple[int, ...]) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean torch.Tensor (True = may attend), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
                        "convert an additive float mask with `mask = additive_mask == 0`")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                         f"{scores_shape} (..., T, S)") from None


def _check_qkv(q, k, v) -> tuple[int, ...]:
    """Validate q (..., T, D), k (..., S, D), v (..., S, Dv); return the scores' shape (..., T, S)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, x, min_dim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim D, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length S (dim -2), got k {tuple(k.shape)} and v {tuple(v.shape)}")
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        hint = ""
        if q.dim() == 4 and k.dim() == 4 and k.shape[1] and q.shape[1] % k.shape[1] == 0:
            hint = f"; for grouped KV heads first call repeat_kv(k, {q.shape[1] // k.shape[1]}) (and on v)"
        raise ValueError(f"leading dims of q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} "
                         f"do not match{hint}") from None
    return (*batch, q.shape[-2], k.shape[-2])


def _check_scale(scale) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number or None (1/sqrt(D)), got {scale}")


# ---------------------------------------------------------------------------------------------------------------
# scaled dot-product attention and masks


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ · scale, masked) v, the naive way (materializes the T×S weights).

    q (..., T, D), k (..., S, D), v (..., S, Dv), mask bool broadcastable to (..., T, S), True = may attend.
    scale defaults to 1/sqrt(D). Returns (out (..., T, Dv), weights (..., T, S)).
    A row whose keys are all masked gets zero weights and a zero output (not NaN).
    """
    scores_shape = _check_qkv(q, k, v)
    _check_scale(scale)
    if mask is not None:
        _check_mask(mask, scores_shape)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is not None:
        weights = weights.nan_to_num(0.0)  # fully masked rows: softmax of all -inf is NaN -> 0
    return weights @ v, weights


def causal_mask(T: int, S: int | None = None, *, device=None) -> torch.Tensor:
    """(T, S) bool, True where query i may see key j: j <= i + (S - T). S > T is a query block at the end (KV cache)."""
    _check_int("T", T)
    S = T if S is None else S
    _check_int("S", S)
    if S < T:
        raise ValueError(f"S (keys) must be >= T (queries) for a causal mask, got T={T}, S={S}")
    i = torch.arange(T, device=device)[:, None] + (S - T)  # absolute position of each query
    j = torch.arange(S, device=device)[None, :]
    return j <= i


def sliding_window_mask(T: int, window: int, *, device=None) -> torch.Tensor:
    """(T, T) bool: causal and at most `window` keys back, i.e. i - window < j <= i (the query itself included)."""
    _check_int("T", T)
    _check_int("window", window)
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (j > i - window)


def padding_mask(lengths, T: int) -> torch.Tensor:
    """(B, 1, 1, T) bool, True for real tokens (right padding): key j is real when j < lengths[b].

    lengths: sequence of B ints or a 1-D integer tensor, each in [0, T]. Broadcasts against (B, H, T, S) scores.
    """
    _check_int("T", T)
    if isinstance(lengths, torch.Tensor):
        if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be a 1-D integer tensor or a list of ints, got {lengths.dtype} "
                            f"of shape {tuple(lengths.shape)}")
        lens = lengths.cpu()
    else:
        try:
            items = list(lengths)
        except TypeError:
            raise TypeError(f"lengths must be a list of ints or a 1-D tensor, got {type(lengths).__name__}") from None
        if not items or any(isinstance(x, bool) or not isinstance(x, int) for x in items):
            raise TypeError(f"lengths must be a non-empty list of ints, got {items!r}")
        lens = torch.tensor(items)
    if lens.numel() == 0 or lens.min() < 0 or lens.max() > T:
        raise ValueError(f"lengths must be in [0, T={T}] (each), got {lens.tolist()}")
    return (torch.arange(T)[None, :] < lens[:, None])[:, None, None, :]  # (B, 1, 1, T)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv·n_rep, S, D): each KV head serves n_rep consecutive query heads.

    Same as torch.repeat_interleave(x, n_rep, dim=1) and transformers' repeat_kv.
    """
    _check_tensor("x", x, min_dim=4, floating=False)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, H_kv, S, D), got {tuple(x.shape)}")
    _check_int("n_rep", n_rep)
    if n_rep == 1:
        return x
    B, H_kv, S, D = x.shape
    x = x[:, :, None, :, :].expand(B, H_kv, n_rep, S, D)  # (B, H_kv, n_rep, S, D), a view
    return x.reshape(B, H_kv * n_rep, S, D)  # (B, H, S, D)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ aᵢ log aᵢ over the last dim, in nats, with 0·log 0 = 0. weights (..., S) -> (...)."""
    _check_tensor("weights", weights)
    if torch.any(weights < 0):
        raise ValueError(f"weights must be non-negative probabilities, got a minimum of {weights.min().item():.3g}")
    return torch.special.entr(weights).sum(dim=-1)


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
        _check_int("d_k", d)
    _check_int("n_keys", n_keys, low=2)
    _check_int("n_rows", n_rows, low=2)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
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
# MHA / GQA / MQA with a KV cache


def _rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim) in the rotate-half layout used by transformers (Llama/Qwen)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer: k, v of shape (B, H_kv, S, D)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def seq_len(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new k, v (B, H_kv, T, D) along the sequence; return all keys and values (B, H_kv, S+T, D)."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


class Attention(nn.Module):
    """Multi-head attention with n_kv_heads key/value heads: MHA (n_kv_heads = n_heads), GQA (a divisor), MQA (1).

    Names follow transformers (q_proj, k_proj, v_proj, o_proj, q_norm, k_norm) so a Qwen3Attention's state_dict
    loads directly. qk_norm: RMSNorm per head on q and k before RoPE (Qwen3). rope_theta: apply RoPE (None = off).
    forward(x (B, T, d_model), mask=None, cache=None) -> (out (B, T, d_model), weights (B, H, T, S)).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, *, head_dim: int | None = None,
                 bias: bool = False, qk_norm: bool = False, rope_theta: float | None = None, causal: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        _check_int("d_model", d_model)
        _check_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        _check_int("n_kv_heads", n_kv_heads)
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads must be divisible by n_kv_heads, got n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        if head_dim is None:
            if d_model % n_heads != 0:
                raise ValueError(f"d_model must be divisible by n_heads when head_dim is not given, "
                                 f"got d_model={d_model}, n_heads={n_heads}")
            head_dim = d_model // n_heads
        _check_int("head_dim", head_dim)
        if rope_theta is not None and (head_dim % 2 or rope_theta <= 0):
            raise ValueError(f"RoPE needs an even head_dim and rope_theta > 0, got head_dim={head_dim}, "
                             f"rope_theta={rope_theta}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.n_rep = n_heads // n_kv_heads
        self.rope_theta, self.causal = rope_theta, causal
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.q_norm = nn.RMSNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_tensor("x", x, min_dim=3)
        if x.dim() != 3 or x.shape[-1] != self.q_proj.in_features:
            raise ValueError(f"x must have shape (B, T, {self.q_proj.in_features}), got {tuple(x.shape)}")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
        B, T, _ = x.shape
        past = 0 if cache is None else cache.seq_len
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if self.rope_theta is not None:
            cos, sin = _rope_cos_sin(torch.arange(past, past + T, device=x.device), self.head_dim,
                                     self.rope_theta, q.dtype)  # (T, D), positions continue after the cache
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, S, D) with S = past + T: only the compact KV heads are stored
        S = k.shape[-2]
        full_mask = causal_mask(T, S, device=x.device) if self.causal else None  # (T, S)
        if mask is not None:
            _check_mask(mask, (B, self.n_heads, T, S))
            full_mask = mask if full_mask is None else (full_mask & mask)
        out, weights = scaled_dot_product_attention(q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep), full_mask)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H·D)
        return self.o_proj(out), weights


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per_value: float = 2) -> int:
    """Bytes of a KV cache: 2 (K and V) × layers × KV heads × head_dim × tokens × batch × bytes per value."""
    for name, val in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                      ("seq_len", seq_len), ("batch", batch)):
        _check_int(name, val)
    if isinstance(bytes_per_value, bool) or not isinstance(bytes_per_value, (int, float)) or bytes_per_value <= 0:
        raise ValueError(f"bytes_per_value must be a positive number (2 for bf16, 1 for int8), got {bytes_per_value!r}")
    return int(2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value)


def mla_cache_bytes(n_layers: int, kv_lora_rank: int, rope_head_dim: int, seq_len: int, batch: int = 1,
                    bytes_per_value: float = 2) -> int:
    """Bytes of an MLA cache (DeepSeek-V2, arXiv:2405.04434): one latent of kv_lora_rank plus one shared RoPE key
    of rope_head_dim per token and layer, instead of per-head K and V."""
    for name, val in (("n_layers", n_layers), ("kv_lora_rank", kv_lora_rank), ("rope_head_dim", rope_head_dim),
                      ("seq_len", seq_len), ("batch", batch)):
        _check_int(name, val)
    if isinstance(bytes_per_value, bool) or not isinstance(bytes_per_value, (int, float)) or bytes_per_value <= 0:
        raise ValueError(f"bytes_per_value must be a positive number, got {bytes_per_value!r}")
    return int(n_layers * (kv_lora_rank + rope_head_dim) * seq_len * batch * bytes_per_value)


# The attention part of DeepSeek-V2's public config.json (MLA), used to compare its cache with MHA/GQA.
DEEPSEEK_V2_MLA = {"num_hidden_layers": 60, "num_attention_heads": 128, "kv_lora_rank": 512,
                   "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128}


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True) -> torch.Tensor:
    """Greedy decoding with or without the KV cache (no EOS stop, so both runs do the same work).

    Without the cache every step re-runs the whole prefix (cost grows with the prefix); with it, one token per step.
    input_ids (1, T) -> (1, T + max_new_tokens).
    """
    _check_tensor("input_ids", input_ids, min_dim=2, floating=False)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    _check_int("max_new_tokens", max_new_tokens)
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
        _check_int("new_tokens", n)
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
# efficient attention: online softmax, tiled (FlashAttention-style) attention, linear attention


def online_softmax(x: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """softmax over the last dim, reading x in blocks with a running max m and running sum l (Milakov & Gimelshein,
    arXiv:1805.02867): l ← l·exp(m_old − m_new) + Σ exp(x_block − m_new). Naive equivalent: torch.softmax(x, -1)."""
    _check_tensor("x", x)
    _check_int("block_size", block_size)
    if x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim to softmax over, got shape {tuple(x.shape)}")
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)  # (...,) running max
    l = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)  # (...,) running sum of exp(x - m)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        m_new = torch.maximum(m, block.amax(dim=-1))
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new[..., None]).sum(dim=-1)
        m = m_new
    return torch.exp(x - m[..., None]) / l[..., None]


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                    scale: float | None = None, *, causal: bool = False, block_q: int = 128,
                    block_k: int = 128) -> torch.Tensor:
    """FlashAttention-style attention (Dao et al., arXiv:2205.14135) in plain PyTorch: loop over query blocks and,
    inside, over key/value blocks, keeping a running max, running sum and un-normalized output, so only
    (block_q × block_k) scores exist at a time. Causal blocks entirely above the diagonal are skipped.

    Shapes as scaled_dot_product_attention; causal=True adds the causal mask. Returns out (..., T, Dv) only.
    Naive equivalent: scaled_dot_product_attention(q, k, v, mask & causal_mask(T, S), scale)[0].
    """
    scores_shape = _check_qkv(q, k, v)
    _check_scale(scale)
    _check_int("block_q", block_q)
    _check_int("block_k", block_k)
    if mask is not None:
        _check_mask(mask, scores_shape)
    T, S = q.shape[-2], k.shape[-2]
    if mask is not None:
        mask = mask.expand(torch.broadcast_shapes(mask.shape, (T, S)))  # (..., T, S), a view
    if causal and S < T:
        raise ValueError(f"causal attention needs S >= T, got T={T}, S={S}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    batch = scores_shape[:-2]
    q, k, v = q.expand(*batch, T, q.shape[-1]), k.expand(*batch, S, k.shape[-1]), v.expand(*batch, S, v.shape[-1])
    out = torch.empty(*batch, T, v.shape[-1], dtype=q.dtype, device=q.device)  # (..., T, Dv)
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qb = q[..., i0:i1, :] * scale  # (..., bq, D)
        m = torch.full((*batch, i1 - i0, 1), float("-inf"), dtype=q.dtype, device=q.device)  # running max
        l = torch.zeros_like(m)  # running sum of exp(s - m)
        acc = torch.zeros(*batch, i1 - i0, v.shape[-1], dtype=q.dtype, device=q.device)  # running Σ exp(s - m) v
        last_key = (i1 - 1) + (S - T) if causal else S - 1  # keys beyond this are masked for every query in block
        for j0 in range(0, last_key + 1, block_k):
            j1 = min(j0 + block_k, S)
            s = qb @ k[..., j0:j1, :].transpose(-2, -1)  # (..., bq, bk)
            allowed = None
            if causal and j1 - 1 > i0 + (S - T):  # block reaches above the diagonal: mask it (else all visible)
                rows = torch.arange(i0, i1, device=q.device)[:, None] + (S - T)  # absolute query positions
                allowed = torch.arange(j0, j1, device=q.device)[None, :] <= rows  # (bq, bk)
            if mask is not None:
                mb = mask[..., i0:i1, j0:j1]
                allowed = mb if allowed is None else (allowed & mb)
            if allowed is not None:
                s = s.masked_fill(~allowed, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # all-masked so far: avoid NaN
            p = torch.exp(s - m_safe)  # (..., bq, bk)
            correction = torch.exp(m - m_safe)  # rescales what was accumulated under the old max
            l = l * correction + p.sum(dim=-1, keepdim=True)
            acc = acc * correction + p @ v[..., j0:j1, :]
            m = m_new
        out[..., i0:i1, :] = torch.where(l > 0, acc / l.clamp_min(torch.finfo(l.dtype).tiny), torch.zeros_like(acc))
    return out


def _elu_feature(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
    """Linear attention (Katharopoulos et al., arXiv:2006.16236): replace exp(q·k) by φ(q)·φ(k) with φ = elu + 1 and
    compute φ(K)ᵀV first, O(T·D²) instead of O(T²·D). q (..., T, D), k (..., S, D), v (..., S, Dv) -> (..., T, Dv).
    causal=True uses prefix sums of φ(k) vᵀ (needs T == S; memory O(T·D·Dv))."""
    _check_qkv(q, k, v)
    fq, fk = _elu_feature(q), _elu_feature(k)
    if not causal:
        kv = fk.transpose(-2, -1) @ v  # (..., D, Dv): the whole sequence summarized in a fixed-size state
        z = fk.sum(dim=-2)  # (..., D)
        return (fq @ kv) / (fq @ z[..., None])  # (..., T, Dv)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal linear attention needs T == S, got T={q.shape[-2]}, S={k.shape[-2]}")
    kv = torch.cumsum(fk[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., T, D, Dv) running state
    z = torch.cumsum(fk, dim=-2)  # (..., T, D)
    num = (fq[..., :, None, :] @ kv).squeeze(-2)  # (..., T, Dv)
    return num / (fq * z).sum(-1, keepdim=True)


def linear_attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The weights linear attention implicitly uses: φ(q)·φ(k) normalized over keys. (..., T, S)."""
    _check_qkv(q, k, k)
    w = _elu_feature(q) @ _elu_feature(k).transpose(-2, -1)  # (..., T, S)
    return w / w.sum(-1, keepdim=True)


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
        if name not in ATTENTION_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(ATTENTION_VARIANTS)}, got {name!r}")
    _check_int("repeats", repeats)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for T in lengths:
        _check_int("T", T)
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
        raise ValueError("text must contain at least one non-space character, got an empty string")
    _check_int("max_tokens", max_tokens, low=2)
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"]
    truncated = ids.shape[1] > max_tokens
    note = ""
    if truncated:
        note = f"input has {ids.shape[1]} tokens; showing the first {max_tokens}"
        ids = ids[:, :max_tokens]
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
