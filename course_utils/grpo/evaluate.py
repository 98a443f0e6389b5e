"""Held-out accuracy of a policy: greedy (exact, strict and lenient scoring), and many samples per problem for pass@k
curves, majority@k and per-problem coverage (Yue et al. 2025)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import re

import torch

from ..checks import check_int, check_items, check_number
from ..data import Task, check_answer, final_answer
from ..evaluation import pass_at_k
from ..rewards import ANSWER_PATTERNS, digits_reward
from .rollout import sample_completions


def majority_answer(texts: Sequence[str]) -> str:
    """The most common final answer (data.final_answer; first seen wins a tie)."""
    if not texts:
        raise ValueError("texts must be non-empty")
    answers = [final_answer(t) for t in texts]
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def strict_correct(task: Task, reply: str) -> bool:
    """Right answer *and* the taught shape (rewards.ANSWER_PATTERNS: the column work, then "so <sum>")."""
    return check_answer(task, reply) and ANSWER_PATTERNS[task.family].fullmatch(reply.strip()) is not None


def lenient_correct(task: Task, reply: str) -> bool:
    """The answer appears as the reply's last number (or, for non-numeric answers, the course's exact check)."""
    if not task.answer.isdigit():
        return check_answer(task, reply)
    numbers = re.findall(r"\d+", reply)
    return bool(numbers) and numbers[-1].lstrip("0") == task.answer.lstrip("0")


@torch.no_grad()
def evaluate_policy(model, tokenizer, tasks: Sequence[Task], *, max_new_tokens: int = 40,
                    batch_prompts: int = 64) -> dict:
    """Greedy held-out accuracy and what it cost: {"greedy": exact-match accuracy, "correct": 0/1 per task (for
    paired error bars), "strict" / "lenient": accuracy under strict_correct / lenient_correct, "digits": partial
    credit (rewards.digits_reward), "tokens": generated tokens per task}. For samples, see sample_correct_counts."""
    check_items("tasks", tasks, Task, "data.Task")
    correct, strict, lenient, digits, tokens = [], 0, 0, 0.0, 0
    for i in range(0, len(tasks), batch_prompts):
        chunk = list(tasks[i:i + batch_prompts])
        ro = sample_completions(model, tokenizer, [t.prompt for t in chunk], 1, max_new_tokens, temperature=0)
        tokens += int(ro.lengths.sum())
        for t, text in zip(chunk, ro.texts):
            correct.append(int(check_answer(t, text)))
            strict += strict_correct(t, text)
            lenient += lenient_correct(t, text)
            digits += digits_reward([text], [t.answer])[0]
    n = len(tasks)
    return {"greedy": sum(correct) / n, "correct": correct, "strict": strict / n, "lenient": lenient / n,
            "digits": digits / n, "tokens": tokens / n}


@torch.no_grad()
def sample_correct_counts(model, tokenizer, tasks: Sequence[Task], n_samples: int, *, temperature: float = 1.0,
                          max_new_tokens: int = 40, seed: int = 0, batch_prompts: int = 16) -> dict:
    """n_samples replies per task: {"n": n_samples, "correct": right replies per task, "answers": the final answers
    per task (in sampling order, for majority@k), "tokens": mean generated tokens per reply}."""
    check_items("tasks", tasks, Task, "data.Task")
    check_int("n_samples", n_samples)
    check_number("temperature", temperature, 0, low_open=True, allowed="a number > 0 (greedy samples are all the same)")
    gen = torch.Generator().manual_seed(seed)
    correct, answers, tokens = [], [], 0
    for i in range(0, len(tasks), batch_prompts):
        chunk = list(tasks[i:i + batch_prompts])
        ro = sample_completions(model, tokenizer, [t.prompt for t in chunk], n_samples, max_new_tokens,
                                temperature=temperature, generator=gen)
        tokens += int(ro.lengths.sum())
        for j, t in enumerate(chunk):
            texts = ro.texts[j * n_samples:(j + 1) * n_samples]
            correct.append(sum(check_answer(t, x) for x in texts))
            answers.append([final_answer(x) for x in texts])
    return {"n": n_samples, "correct": correct, "answers": answers, "tokens": tokens / (len(tasks) * n_samples)}


def pass_at_k_per_problem(counts: dict, k: int) -> list[float]:
    """The unbiased pass@k (Chen et al. 2021) of each problem, from sample_correct_counts (for paired comparisons)."""
    n = counts["n"]
    check_int("k", k, 1, n, allowed=f"an int in [1, n_samples = {n}]")
    return [pass_at_k(n, c, k) for c in counts["correct"]]


def pass_at_k_curve(counts: dict, ks: Sequence[int]) -> list[tuple[float, float]]:
    """(mean, SE over problems) of the unbiased pass@k for each k, from sample_correct_counts."""
    out = []
    for k in ks:
        per_problem = torch.tensor(pass_at_k_per_problem(counts, k), dtype=torch.float64)
        se = float(per_problem.std() / len(per_problem) ** 0.5) if len(per_problem) > 1 else float("nan")
        out.append((float(per_problem.mean()), se))
    return out


def majority_at_k(counts: dict, tasks: Sequence[Task], k: int) -> float:
    """Accuracy of the majority answer among each task's first k samples (one draw, no oracle)."""
    check_int("k", k, 1, counts["n"], allowed=f"an int in [1, n_samples = {counts['n']}]")
    return sum(majority_answer(a[:k]) == t.answer for a, t in zip(counts["answers"], tasks)) / len(tasks)


def coverage(counts_a: dict, counts_b: dict) -> dict:
    """Which problems each model solves at least once in its samples: {"both", "only_a", "only_b", "neither"} counts."""
    if len(counts_a["correct"]) != len(counts_b["correct"]):
        raise ValueError("counts_a and counts_b must come from the same tasks "
                         f"({len(counts_a['correct'])} vs {len(counts_b['correct'])} problems)")
    a = [c > 0 for c in counts_a["correct"]]
    b = [c > 0 for c in counts_b["correct"]]
    return {"both": sum(x and y for x, y in zip(a, b)), "only_a": sum(x and not y for x, y in zip(a, b)),
            "only_b": sum(y and not x for x, y in zip(a, b)), "neither": sum(not (x or y) for x, y in zip(a, b))}
