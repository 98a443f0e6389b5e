"""Lecture 00 (set-up) exercise check: the demo exercise, a numerically stable softmax."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def check_softmax(softmax: Callable[[torch.Tensor], torch.Tensor], trials: int = 5) -> None:
    """softmax(x) over the last dim, stable for large logits; compared with float64 torch.softmax."""
    def trial():
        gen = torch.Generator().manual_seed(1234)
        for t in range(trials):
            shape = (int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(2, 9, (1,), generator=gen)))
            x = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + 30 * t)  # later trials: huge logits
            problem = compare("softmax(x)", call(softmax, x.clone()), torch.softmax(x, dim=-1), atol=1e-6)
            if problem:
                return problem + f" (trial {t}, logits up to {x.abs().max().item():.0f})"
        return None
    return run_check("softmax", trial)
