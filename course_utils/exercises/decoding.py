"""Lecture 05 (decoding) exercise checks: top-p filter, repetition penalty, pass@k, a search error."""

from __future__ import annotations

import math
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


def check_pass_at_k(pass_at_k: Callable) -> None:
    """pass_at_k(n, c, k) -> float: the chance that k of the n samples, drawn without replacement, include one of the
    c correct ones (Chen et al. 2021); compared with 1 - C(n-c, k) / C(n, k) in exact integer arithmetic."""
    cases = [(10, 3, 1), (10, 3, 2), (10, 3, 5), (20, 1, 10), (32, 30, 4), (8, 0, 3), (6, 6, 6), (200, 7, 64)]

    def trial():
        for n, c, k in cases:
            expected = 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)
            got = call(pass_at_k, n, c, k)
            try:
                got = float(got)
            except (TypeError, ValueError):
                return f"pass_at_k({n}, {c}, {k}) should return a number, got {type(got).__name__}"
            if math.isnan(got) or abs(got - expected) > 1e-9:
                hint = ""
                if abs(got - c / n) < 1e-9:
                    hint = " Hint: c / n is pass@1; with k draws any of them may be the correct one."
                elif abs(got - (1 - (1 - c / n) ** k)) < 1e-9:
                    hint = (" Hint: 1 - (1 - c/n)^k draws *with* replacement; the estimator draws k of the n samples"
                            " without replacement: count the k-subsets with no correct sample.")
                elif math.isnan(got) or n - c < k:
                    hint = " Hint: when n - c < k every k-subset holds a correct sample, so pass@k is 1."
                return f"pass_at_k({n}, {c}, {k}) returned {got!r}, expected {expected:.6f}.{hint}"
        return None
    return run_check("pass@k estimator", trial)


def check_beam_loses(search_error_prompt: Callable, model=None, tokenizer=None, *, num_beams: int = 4,
                     max_new_tokens: int = 40) -> None:
    """search_error_prompt() -> a prompt on which beam search returns a *less* likely continuation than greedy, at the
    same length (a search error), both scored by the model's own log-probability (course-tiny by default)."""
    from ..decoding import beam_search, generate, sequence_logprob

    def trial():
        nonlocal model, tokenizer
        prompt = call(search_error_prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            return f"prompt must be a non-empty string, got {prompt!r}"
        if model is None:
            from ..models import load_model

            model, tokenizer = load_model("course-tiny", device="cpu")
        x = tokenizer(prompt, return_tensors="pt").input_ids
        g, b = generate(model, x, max_new_tokens), beam_search(model, x, num_beams, max_new_tokens)
        lg, lb = (sequence_logprob(model, s, x.shape[1], pad_token_id=tokenizer.pad_token_id).item() for s in (g, b))
        same_len = g.shape[1] == b.shape[1]
        if lb < lg - 1e-3 and same_len:
            print(f"greedy log p {lg:.3f} > beam-{num_beams} log p {lb:.3f}, both {g.shape[1] - x.shape[1]} new tokens")
            return None
        if lb < lg - 1e-3:
            return (f"beam search is less likely ({lb:.2f} < {lg:.2f}) but of another length "
                    f"({b.shape[1] - x.shape[1]} vs {g.shape[1] - x.shape[1]} tokens): that can be the length penalty."
                    f" Find one where both have the same length.")
        return (f"here beam search is at least as likely as greedy ({lb:.2f} vs {lg:.2f}). Hint: 5.2's table lists "
                f"prompts where it loses; story openings of one sentence are a good place to look.")
    return run_check("a prompt where beam search loses to greedy", trial)
