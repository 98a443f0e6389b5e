"""Sparse attention patterns from the course notes, as boolean masks (True = may attend) and one grouped kernel.

- local + global (Longformer, Beltagy et al. 2020; BigBird, Zaheer et al. 2020): a sliding window plus a few global
  tokens that see, and are seen by, every token;
- S2-attention (LongLoRA, Chen et al. 2024, arXiv:2309.12307, Sec. 3.2): attention inside groups of G tokens, with
  half of the heads' groups shifted by G/2 so information flows between neighbouring groups.
`s2_attention` computes S2 group by group (as LongLoRA's pseudocode does, with torch.roll); `s2_mask` is the dense mask
it equals, which the tests and the lecture check it against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_int


def local_global_mask(T: int, window: int, global_tokens=(0,), *, causal: bool = False) -> torch.Tensor:
    """(T, T) bool: |i - j| < window (i - window < j <= i when causal), plus every row and column of a global token."""
    check_int("T", T)
    check_int("window", window)
    g = torch.zeros(T, dtype=torch.bool)
    g[list(global_tokens)] = True
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    mask = (i - j).abs() < window
    mask = mask | g[:, None] | g[None, :]
    return mask & (j <= i) if causal else mask


def s2_mask(T: int, group: int, *, shifted: bool) -> torch.Tensor:
    """(T, T) bool of one S2 head: causal inside groups of `group` tokens, the groups moved by group/2 when shifted.

    Shifting is a roll of the sequence by -group/2, so the last group wraps around: it holds the last group/2 tokens
    and then the first group/2, and causality is in that rolled order.
    """
    _check_groups(T, group)
    rolled = (torch.arange(T) - (group // 2 if shifted else 0)) % T  # where each token sits after the roll
    same_group = (rolled[:, None] // group) == (rolled[None, :] // group)
    return same_group & (rolled[None, :] <= rolled[:, None])


def s2_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int) -> torch.Tensor:
    """LongLoRA's shifted sparse attention: q, k, v (B, H, T, D), H even, T divisible by group -> (B, H, T, D).

    Heads H/2.. see their sequence rolled by -group/2; each group of `group` tokens attends causally within itself.
    """
    B, H, T, D = q.shape
    _check_groups(T, group)
    if H % 2:
        raise ValueError(f"S2-attention shifts half of the heads, so H must be even, got {H}")

    def roll(x, shift):  # roll the second half of the heads along the sequence
        return torch.cat([x[:, : H // 2], x[:, H // 2:].roll(shift, dims=2)], dim=1)

    q, k, v = (roll(x, -(group // 2)) for x in (q, k, v))
    grouped = [x.reshape(B, H, T // group, group, D) for x in (q, k, v)]  # (B, H, groups, group, D)
    out = F.scaled_dot_product_attention(*grouped, is_causal=True).reshape(B, H, T, D)
    return roll(out, group // 2)


def _check_groups(T: int, group: int) -> None:
    check_int("T", T)
    check_int("group", group, 2)
    if T % group or group % 2:
        raise ValueError(f"group must be even and divide T, got T={T}, group={group}")
