"""Dual chunk attention: remapped distances by hand, bounded by chunk_size, and attention equal to a float64 dense
reference that rotates each query by its (i, j) distance."""

import math

import pytest
import torch

from course_utils import attention as A
from course_utils.positional import apply_rope, rope_inv_freq


def test_relative_positions_hand_example():
    # chunk_size 6, local window 2 -> chunks of s = 4 tokens; keys at j mod 4
    rel = A.dca_relative_positions(12, 6, 2)
    assert rel[3, :4].tolist() == [3, 2, 1, 0]          # intra-chunk: the true distance
    assert rel[6, :4].tolist() == [6, 5, 4, 3]          # successive, i mod s = 2 <= window: still exact
    assert rel[7, :4].tolist() == [6, 5, 4, 3]          # successive, clamped at chunk_size (true 7..4)
    assert rel[11, :4].tolist() == [6, 5, 4, 3]         # inter-chunk: query at chunk_size, keys at j mod s
    assert rel[11, 8:].tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("T,chunk,window", [(40, 12, 3), (64, 16, 4), (17, 8, 0)])
def test_every_key_attended_and_no_distance_beyond_chunk_size(T, chunk, window):
    rel = A.dca_relative_positions(T, chunk, window)
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    assert (rel[lower] >= 0).all() and (rel[~lower] == -1).all()  # the causal mask, nothing skipped
    assert rel.max().item() <= chunk
    true = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    s = chunk - window
    same_chunk = (torch.arange(T)[:, None] // s) == (torch.arange(T)[None, :] // s)
    assert torch.equal(rel[same_chunk & lower], true[same_chunk & lower])


def test_dca_attention_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    B, H, T, D, chunk, window = 2, 3, 30, 8, 10, 3
    q, k, v = (torch.randn(B, H, T, D, generator=gen) for _ in range(3))
    inv_freq, _ = rope_inv_freq(D, 100.0)
    rel = A.dca_relative_positions(T, chunk, window)
    ref = torch.zeros(B, H, T, D, dtype=torch.float64)
    for i in range(T):
        scores = torch.stack([
            (apply_rope(q[:, :, i:i + 1].double(), torch.tensor([float(rel[i, j])]), inv_freq.double())
             * k[:, :, j:j + 1].double()).sum(-1)[..., 0] for j in range(i + 1)], -1) / math.sqrt(D)  # (B, H, i+1)
        ref[:, :, i] = (scores.softmax(-1)[..., None] * v[:, :, :i + 1].double()).sum(-2)
    got = A.dca_attention(q, k, v, inv_freq, chunk, window)
    assert (got.double() - ref).abs().max().item() < 1e-5


def test_short_sequence_is_plain_rope_attention():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 7, 8, generator=gen) for _ in range(3))
    inv_freq, _ = rope_inv_freq(8)
    pos = torch.arange(7)
    plain = torch.nn.functional.scaled_dot_product_attention(apply_rope(q, pos, inv_freq), apply_rope(k, pos, inv_freq),
                                                             v, is_causal=True)
    assert (A.dca_attention(q, k, v, inv_freq, 10, 2) - plain).abs().max().item() < 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="local_window"):
        A.dca_relative_positions(10, 4, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        A.dca_cases(10, 1, 0)
