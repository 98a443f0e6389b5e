"""Dual chunk attention (DCA; An et al. 2024, "Training-free long-context scaling", arXiv:2402.17463): every query
still attends to every earlier key, but the RoPE relative positions are remapped so that none exceeds what the model
saw in pre-training.

The sequence is cut into chunks of s = chunk_size - local_window tokens. Keys sit at position j mod s. A query uses
  - intra-chunk (same chunk):       position i mod s                  -> distance i - j, exact;
  - successive-chunk (the one before): min(i mod s + s, chunk_size)    -> exact while i mod s <= local_window;
  - inter-chunk (older chunks):     chunk_size                        -> distance in [chunk_size - s + 1, chunk_size].
So every distance is at most chunk_size (ChunkLlama sets chunk_size = 3/4 of the pre-training length).
"""

from __future__ import annotations

import math

import torch

from ..checks import check_int
from ..positional import apply_rope

INTRA, SUCCESSIVE, INTER = 0, 1, 2  # which rule a (query, key) pair uses


def dca_cases(T: int, chunk_size: int, local_window: int) -> torch.Tensor:
    """(T, T) long: INTRA, SUCCESSIVE or INTER for each (query i, key j <= i); -1 above the diagonal."""
    s = _chunk_len(T, chunk_size, local_window)
    chunk = torch.arange(T) // s
    gap = chunk[:, None] - chunk[None, :]  # (T, T) chunks between query and key
    cases = torch.where(gap == 0, INTRA, torch.where(gap == 1, SUCCESSIVE, INTER))
    return torch.where(torch.ones(T, T, dtype=torch.bool).tril(), cases, -1)


def dca_positions(T: int, chunk_size: int, local_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions per rule (3, T) (rows INTRA, SUCCESSIVE, INTER) and key positions (T,)."""
    s = _chunk_len(T, chunk_size, local_window)
    local = torch.arange(T) % s  # (T,)
    query = torch.stack([local, (local + s).clamp(max=chunk_size), torch.full((T,), chunk_size)])  # (3, T)
    return query, local


def dca_relative_positions(T: int, chunk_size: int, local_window: int) -> torch.Tensor:
    """(T, T) long: the distance RoPE sees for each (i, j <= i) under DCA; -1 above the diagonal."""
    query, key = dca_positions(T, chunk_size, local_window)
    cases = dca_cases(T, chunk_size, local_window)
    rel = query[cases.clamp(min=0), torch.arange(T)[:, None]] - key[None, :]  # (T, T)
    return torch.where(cases >= 0, rel, -1)


def dca_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inv_freq: torch.Tensor, chunk_size: int,
                  local_window: int) -> torch.Tensor:
    """Causal attention with DCA's remapped RoPE positions. q, k, v (B, H, T, D) *before* RoPE -> (B, H, T, D).

    The query is rotated three times (one per rule), the keys once at j mod s; each score takes its rule's version.
    """
    B, H, T, D = q.shape
    query_pos, key_pos = dca_positions(T, chunk_size, local_window)
    k_rot = apply_rope(k, key_pos, inv_freq)  # (B, H, T, D)
    scores = torch.stack([apply_rope(q, pos, inv_freq) @ k_rot.transpose(-1, -2) for pos in query_pos])  # (3, B, H, T, T)
    cases = dca_cases(T, chunk_size, local_window)  # (T, T)
    picked = scores.gather(0, cases.clamp(min=0).expand(1, B, H, T, T)).squeeze(0) / math.sqrt(D)  # (B, H, T, T)
    picked = picked.masked_fill(cases < 0, float("-inf"))
    return picked.softmax(-1) @ v


def _chunk_len(T, chunk_size, local_window) -> int:
    check_int("T", T)
    check_int("chunk_size", chunk_size, 2)
    check_int("local_window", local_window, 0, chunk_size - 1, allowed=f"an int in [0, chunk_size - 1 = {chunk_size - 1}]")
    return chunk_size - local_window
