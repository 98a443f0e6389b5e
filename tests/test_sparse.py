"""Sparse attention masks by hand, and S2-attention (computed group by group) against dense float64 attention."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention.sparse import local_global_mask, s2_attention, s2_mask


def test_local_global_mask_by_hand():
    m = local_global_mask(6, 2, global_tokens=(0,))
    expected = torch.tensor([[1, 1, 1, 1, 1, 1],
                             [1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 0, 1, 1, 1, 0],
                             [1, 0, 0, 1, 1, 1],
                             [1, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert torch.equal(local_global_mask(6, 2, (0,), causal=True), expected & torch.ones(6, 6, dtype=torch.bool).tril())


def test_s2_mask_by_hand():
    plain = s2_mask(8, 4, shifted=False)
    assert torch.equal(plain[:4, :4], torch.ones(4, 4, dtype=torch.bool).tril()) and not plain[4:, :4].any()
    shifted = s2_mask(8, 4, shifted=True)  # rolled order: tokens 2..5 | 6, 7, 0, 1
    assert shifted[5, 2] and not shifted[2, 5] and not shifted[5, 1]
    assert shifted[0, 7] and shifted[1, 6]  # the wrapped group: tokens 0, 1 come after 6, 7 and see them


@pytest.mark.parametrize("T,group", [(16, 4), (12, 6)])
def test_s2_attention_equals_dense_attention_with_its_mask(T, group):
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 4, T, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    masks = torch.stack([s2_mask(T, group, shifted=h >= 2) for h in range(4)])  # (H, T, T)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[None])
    assert torch.allclose(s2_attention(q, k, v, group), expected, atol=1e-12)


def test_s2_rejects_bad_groups():
    with pytest.raises(ValueError, match="group must be even and divide T"):
        s2_mask(10, 4, shifted=True)
    with pytest.raises(ValueError, match="H must be even"):
        s2_attention(*(torch.zeros(1, 3, 8, 4) for _ in range(3)), group=4)
