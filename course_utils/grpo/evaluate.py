"""Held-out accuracy of a policy, greedy or with N samples per task (majority vote, best-of-N), and its token cost."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from ..checks import check_int, check_items
from ..data import Task, check_answer, final_answer
from ..rewards import digits_reward
from .rollout import completion_logprobs, sample_completions


def majority_answer(texts: Sequence[str]) -> str:
    """The most common final answer (data.final_answer; first seen wins a tie)."""
    if not texts:
        raise ValueError("texts must be non-empty")
    answers = [final_answer(t) for t in texts]
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


@torch.no_grad()
def evaluate_policy(model, tokenizer, tasks: Sequence[Task], *, n_samples: int = 1, temperature: float = 0.0,
                    max_new_tokens: int = 40, seed: int = 0, batch_prompts: int = 64) -> dict:
    """Accuracy of greedy (n_samples=1, temperature 0) or of N samples per task, with the tokens it cost.

    Returns {"greedy" or "first": acc, "majority": acc, "likelihood": acc (best-of-N by the model's own mean
    log-prob), "oracle": pass@N (best-of-N with the answer checker), "digits": partial credit of the first answer,
    "tokens": generated tokens per task, "correct": 0/1 per task of the greedy or first answer (for error bars)}.
    """
    check_items("tasks", tasks, Task, "data.Task")
    check_int("n_samples", n_samples)
    if n_samples > 1 and temperature == 0:
        raise ValueError("temperature must be > 0 when n_samples > 1 (greedy samples are all the same)")
    gen = torch.Generator().manual_seed(seed)
    maj = lik = orc = digits = 0.0
    tokens, correct = 0, []
    for i in range(0, len(tasks), batch_prompts):
        chunk = list(tasks[i:i + batch_prompts])
        ro = sample_completions(model, tokenizer, [t.prompt for t in chunk], n_samples, max_new_tokens,
                                temperature=temperature, generator=gen)
        tokens += int(ro.lengths.sum())
        score = None
        if n_samples > 1:
            lp = completion_logprobs(model, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1])
            score = ((lp * ro.completion_mask).sum(1) / ro.lengths.clamp(min=1)).view(-1, n_samples)  # (n, G)
        for j, t in enumerate(chunk):
            texts = ro.texts[j * n_samples:(j + 1) * n_samples]
            ok = [check_answer(t, x) for x in texts]
            correct.append(int(ok[0]))
            digits += digits_reward(texts[:1], [t.answer])[0]
            maj += majority_answer(texts) == t.answer
            orc += any(ok)
            lik += ok[int(score[j].argmax())] if score is not None else ok[0]
    n = len(tasks)
    key = "greedy" if temperature == 0 else "first"
    return {key: sum(correct) / n, "majority": maj / n, "likelihood": lik / n, "oracle": orc / n, "digits": digits / n,
            "tokens": tokens / n, "correct": correct}
