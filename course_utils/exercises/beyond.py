"""Lecture 13 (beyond the block) exercise checks: BM25 scores, Mamba's selective scan (recurrent form)."""

from __future__ import annotations

import random
from typing import Callable

import torch

from ..data import WORDS
from ..rag import BM25
from ..ssm import selective_scan_parallel
from .runner import call, compare, run_check


def check_bm25(bm25_scores: Callable, trials: int = 4) -> None:
    """bm25_scores(passages, query, k1=1.5, b=0.75) -> (n_passages,) tensor: Okapi BM25 as rag.BM25 computes it."""
    def trial():
        rng = random.Random(1302)
        for _ in range(trials):
            passages = [" ".join(rng.choice(WORDS[:15]) for _ in range(rng.randint(2, 9))) for _ in range(rng.randint(4, 12))]
            query = " ".join(rng.choice(WORDS[:15]) for _ in range(3))
            got = call(bm25_scores, list(passages), query)
            got = torch.as_tensor(got, dtype=torch.float64) if not isinstance(got, torch.Tensor) else got
            problem = compare(f"BM25 scores for {query!r}", got, BM25(passages).scores(query), atol=1e-6, rtol=1e-6)
            if problem:
                return problem
        return None
    return run_check("BM25 scores", trial)


def check_selective_scan(scan: Callable, trials: int = 3) -> None:
    """scan(x, delta, A, B, C) -> y (batch, T, E): h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = C_t · h_t (h_0 = 0)."""
    def trial():
        g = torch.Generator().manual_seed(1303)
        for _ in range(trials):
            b, T, E, N = 2, int(torch.randint(3, 12, (1,), generator=g)), 3, 4
            x, B, C = (torch.randn(b, T, d, generator=g, dtype=torch.float64) for d in (E, N, N))
            delta = torch.rand(b, T, E, generator=g, dtype=torch.float64) * 0.5 + 0.01
            A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 2 - 0.1
            expected, _ = selective_scan_parallel(x, delta, A, B, C)
            problem = compare("y", call(scan, x, delta, A, B, C), expected, atol=1e-8, rtol=1e-8)
            if problem:
                return problem
        return None
    return run_check("selective scan", trial)
