"""Efficient attention: the online softmax, tiled (FlashAttention-style) attention and linear attention.

Same conventions as attention.mechanism; each function names its naive equivalent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_int, check_tensor
from .mechanism import _check_mask, _check_qkv, _check_scale

# ---------------------------------------------------------------------------------------------------------------
# efficient attention: online softmax, tiled (FlashAttention-style) attention, linear attention


def online_softmax(x: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """softmax over the last dim, reading x in blocks with a running max m and running sum l (Milakov & Gimelshein,
    arXiv:1805.02867): l ← l·exp(m_old − m_new) + Σ exp(x_block − m_new). Naive equivalent: torch.softmax(x, -1)."""
    check_tensor("x", x, min_dim=1, floating=True)
    check_int("block_size", block_size)
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
    check_int("block_q", block_q)
    check_int("block_k", block_k)
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
