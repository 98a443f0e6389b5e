"""PagedAttention (Kwon et al. 2023, vLLM, arXiv:2309.06180): a KV cache stored in fixed-size blocks of one shared
pool, found through a per-request block table, so a request holds only the blocks it has filled.

`PagedKVCache` appends keys and values block by block; `paged_attention` reads them through the block table, one
block at a time with an online softmax, never building a contiguous copy. `cache_waste` compares the memory a batch
of requests reserves under contiguous pre-allocation (every request gets max_len slots) and under paging.
"""

from __future__ import annotations

import math

import torch

from ..checks import check_int


class PagedKVCache:
    """A pool of n_blocks blocks of block_size tokens, each (n_heads, head_dim), for keys and for values.

    append(request, k, v) with k, v (n_heads, T, head_dim) takes free blocks as needed; block_table[request] lists
    the blocks of that request in order; free(request) returns them to the pool.
    """

    def __init__(self, n_blocks: int, block_size: int, n_heads: int, head_dim: int, dtype=torch.float32):
        for name, value in (("n_blocks", n_blocks), ("block_size", block_size), ("n_heads", n_heads),
                            ("head_dim", head_dim)):
            check_int(name, value)
        self.block_size = block_size
        self.k_pool = torch.zeros(n_blocks, n_heads, block_size, head_dim, dtype=dtype)
        self.v_pool = torch.zeros_like(self.k_pool)
        self.free_blocks = list(range(n_blocks))
        self.block_table: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    def append(self, request: int, k: torch.Tensor, v: torch.Tensor) -> None:
        table = self.block_table.setdefault(request, [])
        n = self.lengths.get(request, 0)
        for t in range(k.shape[1]):
            if n % self.block_size == 0:  # the last block is full (or there is none): take a free one
                if not self.free_blocks:
                    raise RuntimeError(f"the KV pool is full ({self.k_pool.shape[0]} blocks of {self.block_size} "
                                       f"tokens); free finished requests or make the pool larger")
                table.append(self.free_blocks.pop(0))
            block, slot = table[-1], n % self.block_size
            self.k_pool[block, :, slot] = k[:, t]
            self.v_pool[block, :, slot] = v[:, t]
            n += 1
        self.lengths[request] = n

    def free(self, request: int) -> None:
        self.free_blocks += self.block_table.pop(request)
        self.lengths.pop(request)

    def contiguous(self, request: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The request's keys and values copied out in order: (n_heads, T, head_dim) each (for checking only)."""
        n, table = self.lengths[request], self.block_table[request]
        k = torch.cat([self.k_pool[b] for b in table], dim=1)[:, :n]
        v = torch.cat([self.v_pool[b] for b in table], dim=1)[:, :n]
        return k, v


def paged_attention(q: torch.Tensor, cache: PagedKVCache, request: int) -> torch.Tensor:
    """One decode step: q (n_heads, head_dim) attends to every cached token of `request`, read block by block.

    Each block's scores update a running max, normalizer and weighted sum (the online softmax), as the vLLM kernel
    does per thread block. Returns (n_heads, head_dim).
    """
    n = cache.lengths[request]
    m = torch.full(q.shape[:1], float("-inf"), dtype=q.dtype)  # (H,) running max
    denom = torch.zeros(q.shape[:1], dtype=q.dtype)  # (H,)
    acc = torch.zeros_like(q)  # (H, D)
    for i, block in enumerate(cache.block_table[request]):
        used = min(cache.block_size, n - i * cache.block_size)  # the last block may be partly filled
        k, v = cache.k_pool[block, :, :used], cache.v_pool[block, :, :used]  # (H, used, D)
        s = torch.einsum("hd,htd->ht", q, k) / math.sqrt(q.shape[-1])  # (H, used)
        m_new = torch.maximum(m, s.max(-1).values)
        p = torch.exp(s - m_new[:, None])
        correction = torch.exp(m - m_new)
        denom = denom * correction + p.sum(-1)
        acc = acc * correction[:, None] + torch.einsum("ht,htd->hd", p, v)
        m = m_new
    return acc / denom[:, None]


def cache_waste(lengths, max_len: int, block_size: int) -> dict[str, int]:
    """KV slots (tokens) reserved but unused by requests of `lengths` tokens.

    contiguous: each request pre-allocates max_len slots (the request's final length is not known in advance);
    paged: each request holds ceil(length / block_size) blocks, so at most block_size - 1 slots are unused.
    Returns {"used", "contiguous_reserved", "paged_reserved"} in token slots.
    """
    check_int("max_len", max_len)
    check_int("block_size", block_size)
    lengths = [check_int("length", int(n)) for n in lengths]
    if max(lengths) > max_len:
        raise ValueError(f"a request of {max(lengths)} tokens does not fit max_len={max_len}")
    return {"used": sum(lengths), "contiguous_reserved": max_len * len(lengths),
            "paged_reserved": sum(math.ceil(n / block_size) * block_size for n in lengths)}
