"""Lecture 05 (decoding) exercise checks: top-p filter, repetition penalty, majority vote."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def _same_filtered(name: str, got, expected: torch.Tensor) -> str | None:
    """None when got has -inf exactly where expected does and equal finite values."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return compare(name, got, expected)
    if not torch.equal(torch.isinf(got) & (got < 0), torch.isinf(expected) & (expected < 0)):
        wrong = (torch.isinf(got) != torch.isinf(expected)).sum().item()
        return f"{name} removes the wrong tokens ({wrong} entries differ in being -inf)"
    finite = torch.isfinite(expected)
    return compare(name + " (kept entries)", got[finite], expected[finite], atol=1e-5)


def check_top_p(top_p_filter: Callable, trials: int = 6) -> None:
    """top_p_filter(logits (B, V), p) keeps the smallest set of top tokens with mass >= p; compared with transformers."""
    from transformers.generation.logits_process import TopPLogitsWarper

    def trial():
        gen = torch.Generator().manual_seed(505)
        for t in range(trials):
            logits = torch.randn(3, 5 + 20 * t, generator=gen) * (0.5 + t)
            p = [0.1, 0.5, 0.8, 0.9, 0.95, 1.0][t % 6]
            expected = TopPLogitsWarper(p)(None, logits.clone())
            problem = _same_filtered("top_p_filter(logits, p)", call(top_p_filter, logits.clone(), p), expected)
            if problem:
                return problem + f" (trial {t}, p={p}, V={logits.shape[1]})"
        return None
    return run_check("top-p (nucleus) filter", trial)


def check_repetition_penalty(apply_repetition_penalty: Callable, trials: int = 5) -> None:
    """apply_repetition_penalty(logits (B, V), input_ids (B, L), penalty): the CTRL / transformers rule."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    def trial():
        gen = torch.Generator().manual_seed(506)
        for t in range(trials):
            logits = torch.randn(2, 30, generator=gen) * 3
            ids = torch.randint(0, 30, (2, 4 + 3 * t), generator=gen)
            penalty = [1.2, 2.0, 0.7, 1.5, 3.0][t % 5]
            expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
            got = call(apply_repetition_penalty, logits.clone(), ids.clone(), penalty)
            problem = compare("apply_repetition_penalty(...)", got, expected)
            if problem:
                return problem + f" (trial {t}, penalty={penalty}; hint: the sign of the logit matters)"
        return None
    return run_check("repetition penalty", trial)


def check_majority_vote(majority_vote: Callable) -> None:
    """majority_vote(answers) -> most common non-None answer, ties to the one seen first, None if none valid."""
    cases = [(["4", "5", "4"], "4"), (["7"], "7"), ([None, "3", None, "2", "2"], "2"), (["a", "b", "b", "a"], "a"),
             (["9", None, "8", "8", "9", "8"], "8"), ([None, None], None)]

    def trial():
        for answers, expected in cases:
            got = call(majority_vote, list(answers)) if expected is not None else majority_vote(list(answers))
            if got != expected:
                return f"majority_vote({answers}) returned {got!r}, expected {expected!r}"
        return None
    return run_check("majority vote", trial)
