"""Verifiable rewards (可验证奖励) for the course tasks: plain Python functions, usable by our GRPO loop and by TRL.

Each reward function takes a batch, `fn(completions, **columns) -> list[float]`, the signature TRL's
GRPOTrainer calls (extra keyword arguments such as `prompts` or `completion_ids` are ignored):

    format_reward(["3+6=9 2+5=7 1+4=5 so 579", "579"], family=["addition", "addition"])   # -> [1.0, 0.0]
    accuracy_reward(["3+6=9 2+5=7 1+4=5 so 579", "578"], answer=["579", "579"])          # -> [1.0, 0.0]

A completion is a string, or a chat reply [{"role": "assistant", "content": "..."}] (TRL's conversational form).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Sequence

import torch

from .data import TASK_FAMILIES, Task, final_answer

# What a well-formed reply looks like for each family (the whole stripped reply must match).
# R1-Zero asked for <think>...</think><answer>...</answer>; a 3M-parameter model that never saw those tags
# cannot be prompted into them, so "well-formed" here means the shape SFT taught: three column steps then
# "so <sum>" for addition (data.addition_work), just the answer in the family's shape for the others.
ANSWER_PATTERNS: dict[str, re.Pattern] = {
    "addition": re.compile(r"(\d\+\d(\+1)?=\d{1,2} ){3}so \d{1,4}"),
    "count": re.compile(r"\d{1,2}"),
    "sort": re.compile(r"\d{1,3}( \d{1,3}){1,9}"),
    "reverse": re.compile(r"[a-z]{1,20}"),
    "format": re.compile(r"\[[A-Z]{1,20}\]"),
}


def completion_text(completion) -> str:
    """The text of one completion: a str, or the content of a chat reply [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    if (isinstance(completion, (list, tuple)) and len(completion) >= 1 and isinstance(completion[-1], dict)
            and isinstance(completion[-1].get("content"), str)):
        return completion[-1]["content"]
    raise TypeError(f"a completion must be a str or a list of chat messages with 'content', got {completion!r}")


def _check_columns(completions, **columns) -> None:
    if not isinstance(completions, (list, tuple)):
        raise TypeError(f"completions must be a list, got {type(completions).__name__}")
    for name, values in columns.items():
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"{name} must be a list with one entry per completion ({len(completions)}), got {got}")


def format_reward(completions: Sequence, family: Sequence[str], **kwargs) -> list[float]:
    """1.0 when the stripped reply is exactly an answer in its family's shape (ANSWER_PATTERNS), else 0.0."""
    _check_columns(completions, family=family)
    bad = sorted({f for f in family if f not in ANSWER_PATTERNS})
    if bad:
        raise ValueError(f"family must be one of {list(ANSWER_PATTERNS)}, got {bad}")
    return [1.0 if ANSWER_PATTERNS[f].fullmatch(completion_text(c).strip()) else 0.0
            for c, f in zip(completions, family)]


def accuracy_reward(completions: Sequence, answer: Sequence[str], **kwargs) -> list[float]:
    """1.0 when the reply's final answer equals the reference answer exactly (the same test as data.check_answer)."""
    _check_columns(completions, answer=answer)
    return [1.0 if final_answer(completion_text(c)) == str(a) else 0.0 for c, a in zip(completions, answer)]


def digits_reward(completions: Sequence, answer: Sequence[str], **kwargs) -> list[float]:
    """Partial credit for numbers: the fraction of digit positions (aligned from the right) of the final answer
    (data.final_answer) that match the answer.

    "1158" for 1168 scores 0.75; a final answer that is not a plain number scores 0; non-numeric answers score exact match.
    Dense where exact match is sparse: most groups then have different rewards, so GRPO gets a signal.
    """
    _check_columns(completions, answer=answer)
    out = []
    for c, a in zip(completions, answer):
        text, a = final_answer(completion_text(c)), str(a)
        if not a.isdigit():
            out.append(1.0 if text == a else 0.0)
        elif not (text.isdigit() and text.isascii()):
            out.append(0.0)
        else:
            width = max(len(text), len(a))
            out.append(sum(x == y for x, y in zip(text.zfill(width), a.zfill(width))) / width)
    return out


def random_reward(completions: Sequence, prompts: Sequence[str], **kwargs) -> list[float]:
    """A control that carries no information: 1.0 or 0.0 with probability 1/2 each, whatever the reply says.

    Drawn from a hash of (prompt, reply, how many identical replies came before it in this batch), so every sample
    gets its own coin flip and a resumed run sees the same coins (Shao et al. 2025, "Spurious rewards").
    """
    _check_columns(completions, prompts=prompts)
    seen: dict[tuple[str, str], int] = {}
    out = []
    for c, p in zip(completions, prompts):
        key = (str(p), completion_text(c))
        seen[key] = seen.get(key, -1) + 1
        digest = hashlib.blake2b(f"{key[0]}\x00{key[1]}\x00{seen[key]}".encode(), digest_size=8).digest()
        out.append(float(digest[0] & 1))
    return out


# Variants as a dict of functions with one signature; the total reward is their (weighted) sum, as in TRL.
REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {"format": format_reward, "accuracy": accuracy_reward}
ALL_REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {**REWARD_FUNCS, "digits": digits_reward}
# The reward sets the GRPO lab can train with: the verifier's (with or without partial credit) and two controls.
REWARD_SETS: dict[str, dict[str, Callable[..., list[float]]]] = {
    "default": REWARD_FUNCS, "all": ALL_REWARD_FUNCS, "format_only": {"format": format_reward},
    "random": {"random": random_reward}}


def score_completions(completions: Sequence, tasks: Sequence[Task], reward_funcs: dict | None = None) -> dict[str, torch.Tensor]:
    """Every reward function on a batch: {name: (N,) float tensor}; tasks[i] is the task of completions[i]."""
    funcs = REWARD_FUNCS if reward_funcs is None else reward_funcs
    if not isinstance(funcs, dict) or not funcs or not all(callable(f) for f in funcs.values()):
        raise ValueError(f"reward_funcs must be a non-empty dict name -> function, got {reward_funcs!r}")
    if len(tasks) != len(completions) or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks must be a list of data.Task, one per completion ({len(completions)}), got {len(tasks)}")
    cols = {"answer": [t.answer for t in tasks], "family": [t.family for t in tasks],
            "prompts": [t.prompt for t in tasks]}
    return {name: torch.tensor(f(list(completions), **cols), dtype=torch.float32) for name, f in funcs.items()}


assert set(ANSWER_PATTERNS) == set(TASK_FAMILIES), "every task family needs an answer pattern"
