"""Multi-head latent attention (MLA, DeepSeek-V2, arXiv:2405.04434, Sec. 2.1) and its weight absorption.

Instead of per-head keys and values, each token stores one compressed latent c_KV (kv_lora_rank numbers) and one
RoPE key shared by all heads (rope_dim numbers). Keys and values are re-expanded from c_KV by kv_b_proj — or, at
decode time, never expanded: W_UK is folded into the query and W_UV applied after the weighted sum ("absorption").
Parameter names follow transformers' DeepseekV3Attention (rotate-half RoPE, rope_interleave=False), so its weights
load directly.
"""

from __future__ import annotations

import math
import torch
import torch.nn as nn

from ..checks import check_int
from ..norms import RMSNorm
from ..positional import apply_rope, rope_inv_freq
from .mechanism import KVCache


class MLA(nn.Module):
    """Causal MLA. forward(x (B, T, d), cache=None, absorbed=False) -> (B, T, d); a KVCache keeps the latents.

    q: q_b_proj(RMSNorm(q_a_proj(x))) split per head into a content part (nope_dim) and a RoPE part (rope_dim);
    kv: kv_a_proj_with_mqa(x) -> latent c_KV (normalized) and one RoPE key; kv_b_proj(c_KV) -> per-head k_nope, v.
    absorbed=True computes the same output without expanding keys and values (the decode-time path).
    """

    def __init__(self, d_model: int, n_heads: int, *, kv_lora_rank: int, q_lora_rank: int | None = None,
                 nope_dim: int = 32, rope_dim: int = 16, v_dim: int = 32, rope_theta: float = 10000.0):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("kv_lora_rank", kv_lora_rank),
                            ("nope_dim", nope_dim), ("rope_dim", rope_dim), ("v_dim", v_dim)):
            check_int(name, value)
        self.n_heads, self.nope_dim, self.rope_dim, self.v_dim = n_heads, nope_dim, rope_dim, v_dim
        self.kv_lora_rank = kv_lora_rank
        qk_dim = nope_dim + rope_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, n_heads * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, check_int("q_lora_rank", q_lora_rank), bias=False)
            self.q_a_layernorm = RMSNorm(q_lora_rank)
            self.q_b_proj = nn.Linear(q_lora_rank, n_heads * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d_model, kv_lora_rank + rope_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(kv_lora_rank)
        self.kv_b_proj = nn.Linear(kv_lora_rank, n_heads * (nope_dim + v_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * v_dim, d_model, bias=False)
        self.scale = 1.0 / math.sqrt(qk_dim)
        self.register_buffer("inv_freq", rope_inv_freq(rope_dim, rope_theta)[0], persistent=False)

    def _queries(self, x, positions):
        """(q_nope (B, H, T, nope_dim), q_rot (B, H, T, rope_dim)) with RoPE applied."""
        B, T, _ = x.shape
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, self.n_heads, self.nope_dim + self.rope_dim).transpose(1, 2)
        q_nope, q_rot = q.split([self.nope_dim, self.rope_dim], dim=-1)
        return q_nope, apply_rope(q_rot, positions, self.inv_freq.to(x.dtype))

    def latents(self, x, positions):
        """What the cache stores for tokens x (B, T, d): (c_kv (B, T, kv_lora_rank), k_rot (B, T, rope_dim))."""
        c_kv, k_rot = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), apply_rope(k_rot, positions, self.inv_freq.to(x.dtype))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, absorbed: bool = False) -> torch.Tensor:
        B, T, _ = x.shape
        past = 0 if cache is None else cache.seq_len
        positions = torch.arange(past, past + T, device=x.device)
        q_nope, q_rot = self._queries(x, positions)  # (B, H, T, .)
        c_kv, k_rot = self.latents(x, positions)
        if cache is not None:  # the latents are stored as one "head": (B, 1, S, r) and (B, 1, S, rope_dim)
            c_kv, k_rot = (t[:, 0] for t in cache.update(c_kv[:, None], k_rot[:, None]))  # (B, S, r), (B, S, dr)
        S = c_kv.shape[1]
        w_uk, w_uv = self.kv_b_proj.weight.view(self.n_heads, self.nope_dim + self.v_dim, -1).split(
            [self.nope_dim, self.v_dim], dim=1)  # (H, nope_dim, r), (H, v_dim, r)
        rot_scores = q_rot @ k_rot[:, None].transpose(-1, -2)  # (B, H, T, S): the shared RoPE key
        if absorbed:  # q_nope . (W_UK c) = (W_UK^T q_nope) . c: score the latents directly
            q_latent = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # (B, H, T, r)
            scores = q_latent @ c_kv[:, None].transpose(-1, -2) + rot_scores
        else:  # expand every cached latent into per-head keys
            k_nope = torch.einsum("bsr,hnr->bhsn", c_kv, w_uk)  # (B, H, S, nope_dim)
            scores = q_nope @ k_nope.transpose(-1, -2) + rot_scores
        causal = torch.arange(S, device=x.device)[None, :] <= positions[:, None]  # (T, S)
        weights = torch.softmax((scores * self.scale).masked_fill(~causal, float("-inf")), dim=-1)
        if absorbed:  # sum the latents first, expand once per head: W_UV (sum_j a_j c_j)
            out = torch.einsum("bhtr,hvr->bhtv", weights @ c_kv[:, None], w_uv)  # (B, H, T, v_dim)
        else:
            v = torch.einsum("bsr,hvr->bhsv", c_kv, w_uv)  # (B, H, S, v_dim)
            out = weights @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))

    def cache_values_per_token(self) -> int:
        """Numbers cached per token and layer: kv_lora_rank + rope_dim (MHA would cache 2 * n_heads * head_dim)."""
        return self.kv_lora_rank + self.rope_dim
