"""Attention itself: scaled dot-product attention, masks, MHA/GQA/MQA with a KV cache, and the cache's size.

Conventions: shapes use B batch, H heads, T query length, S key length, D head dim. Masks are boolean with
True = may attend. Entropies are in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_int, check_number, check_tensor

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
    check_int("T", T)
    S = check_int("S", T if S is None else S)
    if S < T:
        raise ValueError(f"S (keys) must be >= T (queries) for a causal mask, got T={T}, S={S}")
    i = torch.arange(T, device=device)[:, None] + (S - T)  # absolute position of each query
    j = torch.arange(S, device=device)[None, :]
    return j <= i


def sliding_window_mask(T: int, window: int, *, device=None) -> torch.Tensor:
    """(T, T) bool: causal and at most `window` keys back, i.e. i - window < j <= i (the query itself included)."""
    check_int("T", T)
    check_int("window", window, allowed=">= 1")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (j > i - window)


def padding_mask(lengths, T: int) -> torch.Tensor:
    """(B, 1, 1, T) bool, True for real tokens (right padding): key j is real when j < lengths[b].

    lengths: sequence of B ints or a 1-D integer tensor, each in [0, T]. Broadcasts against (B, H, T, S) scores.
    """
    check_int("T", T)
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
    check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, H_kv, S, D), got {tuple(x.shape)}")
    check_int("n_rep", n_rep, allowed=">= 1")
    if n_rep == 1:
        return x
    B, H_kv, S, D = x.shape
    x = x[:, :, None, :, :].expand(B, H_kv, n_rep, S, D)  # (B, H_kv, n_rep, S, D), a view
    return x.reshape(B, H_kv * n_rep, S, D)  # (B, H, S, D)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ aᵢ log aᵢ over the last dim, in nats, with 0·log 0 = 0. weights (..., S) -> (...)."""
    check_tensor("weights", weights, min_dim=1, floating=True)
    if torch.any(weights < 0):
        raise ValueError(f"weights must be non-negative probabilities, got a minimum of {weights.min().item():.3g}")
    return torch.special.entr(weights).sum(dim=-1)


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
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        check_int("n_kv_heads", n_kv_heads)
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads must be divisible by n_kv_heads, got n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        if head_dim is None:
            if d_model % n_heads != 0:
                raise ValueError(f"d_model must be divisible by n_heads when head_dim is not given, "
                                 f"got d_model={d_model}, n_heads={n_heads}")
            head_dim = d_model // n_heads
        check_int("head_dim", head_dim)
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
        check_tensor("x", x, min_dim=3, floating=True)
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
        check_int(name, val, allowed=">= 1")
    check_number("bytes_per_value", bytes_per_value, 0, low_open=True,
                 allowed="a positive number (2 for bf16, 1 for int8)")
    return int(2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value)


def mla_cache_bytes(n_layers: int, kv_lora_rank: int, rope_head_dim: int, seq_len: int, batch: int = 1,
                    bytes_per_value: float = 2) -> int:
    """Bytes of an MLA cache (DeepSeek-V2, arXiv:2405.04434): one latent of kv_lora_rank plus one shared RoPE key
    of rope_head_dim per token and layer, instead of per-head K and V."""
    for name, val in (("n_layers", n_layers), ("kv_lora_rank", kv_lora_rank), ("rope_head_dim", rope_head_dim),
                      ("seq_len", seq_len), ("batch", batch)):
        check_int(name, val)
    check_number("bytes_per_value", bytes_per_value, 0, low_open=True)
    return int(n_layers * (kv_lora_rank + rope_head_dim) * seq_len * batch * bytes_per_value)


# The attention part of DeepSeek-V2's public config.json (MLA), used to compare its cache with MHA/GQA.
DEEPSEEK_V2_MLA = {"num_hidden_layers": 60, "num_attention_heads": 128, "kv_lora_rank": 512,
                   "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128}


# ---------------------------------------------------------------------------------------------------------------
# checks the functions above (and attention.efficient) share


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
        check_tensor(name, x, min_dim=2, floating=True)
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
    if scale is not None:
        check_number("scale", scale, 0, low_open=True, finite=True,
                     allowed="a positive finite number or None (1/sqrt(D))")
