"""PagedAttention read through block tables equals attention over the contiguous cache (float64 SDPA)."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention.paged import PagedKVCache, cache_waste, paged_attention


def test_paged_attention_equals_contiguous_attention():
    gen = torch.Generator().manual_seed(0)
    H, D = 3, 8
    cache = PagedKVCache(n_blocks=20, block_size=4, n_heads=H, head_dim=D, dtype=torch.float64)
    full = {}
    for request, length in [(0, 13), (1, 4), (2, 7)]:  # interleave the requests' appends, as a server would
        k, v = (torch.randn(H, length, D, generator=gen, dtype=torch.float64) for _ in range(2))
        full[request] = (k, v)
    for start in range(0, 13, 3):
        for request, (k, v) in full.items():
            cache.append(request, k[:, start: start + 3], v[:, start: start + 3])
    table = cache.block_table[0]  # 13 tokens in 4 blocks, not consecutive: the requests' blocks interleave
    assert len(table) == 4 and table != list(range(table[0], table[0] + 4))
    for request, (k, v) in full.items():
        q = torch.randn(H, D, generator=gen, dtype=torch.float64)
        expected = F.scaled_dot_product_attention(q[:, None], k, v)[:, 0]  # (H, D)
        assert torch.allclose(paged_attention(q, cache, request), expected, atol=1e-12)
        ck, cv = cache.contiguous(request)
        assert torch.equal(ck, k) and torch.equal(cv, v)


def test_free_returns_blocks_and_full_pool_says_what_to_do():
    cache = PagedKVCache(n_blocks=2, block_size=2, n_heads=1, head_dim=2)
    cache.append(0, torch.ones(1, 3, 2), torch.ones(1, 3, 2))
    assert len(cache.block_table[0]) == 2 and cache.free_blocks == []
    with pytest.raises(RuntimeError, match="the KV pool is full"):
        cache.append(1, torch.ones(1, 1, 2), torch.ones(1, 1, 2))
    cache.free(0)
    assert sorted(cache.free_blocks) == [0, 1]


def test_cache_waste_by_hand():
    w = cache_waste([5, 16, 1], max_len=16, block_size=4)
    assert w == {"used": 22, "contiguous_reserved": 48, "paged_reserved": 8 + 16 + 4}
    with pytest.raises(ValueError, match="does not fit max_len=16"):
        cache_waste([17], max_len=16, block_size=4)
    assert math.isclose(1 - w["used"] / w["paged_reserved"], 6 / 28)
