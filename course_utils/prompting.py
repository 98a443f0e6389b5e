"""In-context learning (lecture 13): few-shot prompts in the prose course-tiny was pretrained on, their accuracy,
and answering with worked steps (chain of thought) vs at once.

    prompt = few_shot_prompt(task, 4, seed=0)               # 4 train-split examples of the task's family, then it
    correct = icl_accuracy(model, tok, tasks, 4, seed=0)     # greedy completion, exact match, one 0/1 per task
    r = direct_vs_worked(sft_model, tok, addition_tasks)     # {"direct": [...], "worked": [...]}, the same tasks

Pretraining packed one document per task, each followed by the end-of-text token (pretrain.pack), so the examples
of a few-shot prompt are joined by that token: what the model saw when two task documents happened to follow each
other. Zero shots give exactly sft.PROMPT_FORMATS["prose"].
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from .checks import check_int, check_items
from .data import ANSWER_MARKER, TASK_FAMILIES, Task, check_answer, task_split
from .sft import greedy_continuations

SEPARATOR = "<|endoftext|>"  # between examples: the EOS that pretraining put after every document
STOP_STRINGS = ("\n", "Question")  # a completion ends at the first of these (or at EOS / <|im_end|>)
# families whose tasks show work before the answer (addition: data.addition_work), read off the generators
WORKED_FAMILIES = tuple(f for f, make in TASK_FAMILIES.items() if make(random.Random(0)).work)


def _check_task(task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a data.Task, got {type(task).__name__}")
    if task.family not in TASK_FAMILIES:
        raise ValueError(f"task.family must be one of {list(TASK_FAMILIES)}, got {task.family!r}")
    return task


def _check_worked(worked, family: str) -> None:
    if not isinstance(worked, bool):
        raise TypeError(f"worked must be a bool, got {type(worked).__name__} {worked!r}")
    if worked and family not in WORKED_FAMILIES:
        raise ValueError(f"worked=True needs a family whose tasks show work {list(WORKED_FAMILIES)}, "
                         f"got a {family!r} task")


def example_text(task: Task, *, worked: bool = False) -> str:
    """One solved example as pretraining wrote it: 'Question: What is 2 + 3? Answer: 5.'

    worked=True writes the work first, as SFT replies do: '... Answer: 2+3=5 0+0=0 0+0=0 so 5.'
    """
    _check_task(task)
    _check_worked(worked, task.family)
    return f"Question: {task.prompt} Answer: {task.reply if worked else task.answer}."


def question_text(task: Task) -> str:
    """The unsolved question the model completes: 'Question: What is 2 + 3? Answer:' (= the 'prose' format)."""
    return f"Question: {_check_task(task).prompt} Answer:"


def sample_exemplars(task: Task, shots: int, *, seed: int = 0) -> list[Task]:
    """`shots` distinct train-split tasks of `task`'s family, none with its prompt.

    The draw depends on (seed, task.prompt): the same task gets the same examples on every run, other tasks others.
    """
    _check_task(task)
    check_int("shots", shots, 0)
    check_int("seed", seed, 0)
    rng, make = random.Random(f"{seed}/{task.prompt}"), TASK_FAMILIES[task.family]
    chosen, seen = [], {task.prompt}
    for _ in range(200 * shots + 1000):
        if len(chosen) == shots:
            break
        t = make(rng)
        if t.prompt not in seen and task_split(t) == "train":
            chosen.append(t)
            seen.add(t.prompt)
    if len(chosen) < shots:
        raise ValueError(f"shots={shots} is more than the distinct train-split {task.family!r} tasks found "
                         f"({len(chosen)})")
    return chosen


def few_shot_prompt(task: Task, shots: int, *, worked: bool = False, seed: int = 0,
                    separator: str = SEPARATOR) -> str:
    """`shots` solved train-split examples of the task's family, then the task's question, joined by `separator`.

    few_shot_prompt(task, 1) -> 'Question: What is 1 + 2? Answer: 3.<|endoftext|>Question: What is 4 + 5? Answer:'
    worked=True shows the examples' work before ' so <answer>' (chain-of-thought prompting, Wei et al. 2022).
    """
    _check_task(task)
    _check_worked(worked, task.family)
    if not isinstance(separator, str):
        raise TypeError(f"separator must be a str, got {type(separator).__name__}")
    shown = [example_text(t, worked=worked) for t in sample_exemplars(task, shots, seed=seed)]
    return separator.join(shown + [question_text(task)])


def _clean(text: str, stop: Sequence[str]) -> str:
    """The completion up to the first stop string, stripped, without the sentence's full stop."""
    for s in stop:
        text = text.split(s, 1)[0]
    return text.strip().removesuffix(".").strip()


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 20, batch_size: int = 64,
             stop: Sequence[str] = STOP_STRINGS) -> list[str]:
    """Greedy completions of raw text prompts (left-padded batches), cut at the first stop string or EOS, stripped,
    trailing '.' removed: 'Question: What is 2 + 3? Answer:' -> '5'.

    Raises ValueError when a prompt plus max_new_tokens does not fit the model's context (course-tiny: 256 tokens).
    """
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of str, got {prompts!r:.80}")
    check_int("max_new_tokens", max_new_tokens)
    check_int("batch_size", batch_size)
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"stop must be a sequence of non-empty strings, got {stop!r}")
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    n_ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if n_ctx is not None and max(lengths) + max_new_tokens > n_ctx:
        i = max(range(len(lengths)), key=lengths.__getitem__)
        raise ValueError(f"prompts[{i}] has {lengths[i]} tokens; with max_new_tokens={max_new_tokens} that is more "
                         f"than the model's context of {n_ctx} tokens (use fewer shots or fewer new tokens)")
    # stop strings that are one token end generation early too; the rest are cut afterwards
    encoded = tokenizer(list(stop), add_special_tokens=False)["input_ids"] if stop else []
    stop_ids = tuple(ids[0] for ids in encoded if len(ids) == 1)
    out_texts = greedy_continuations(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, stop_ids=stop_ids)
    return [_clean(t, stop) for t in out_texts]


def icl_accuracy(model, tokenizer, tasks: list[Task], shots: int, *, seed: int, worked: bool = False,
                 batch_size: int = 64, max_new_tokens: int | None = None, separator: str = SEPARATOR) -> list[bool]:
    """Exact match (data.check_answer) of greedy completions of few_shot_prompt(task, shots), one bool per task.

    Each task gets its own examples (sample_exemplars with `seed`). max_new_tokens None: 20 (the longest answer,
    a sorted list, is 17 tokens with its '.'), or 40 with worked=True (a worked addition is at most 33).
    """
    check_items("tasks", tasks, Task, "data.Task")
    check_int("shots", shots, 0)
    if max_new_tokens is None:
        max_new_tokens = 40 if worked else 20
    prompts = [few_shot_prompt(t, shots, worked=worked, seed=seed, separator=separator) for t in tasks]
    completions = complete(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [check_answer(t, c) for t, c in zip(tasks, completions)]


def chat_prompt(tokenizer, task: Task, prefill: str = "") -> str:
    """The chat-format prompt SFT taught, with `prefill` already written at the start of the assistant's turn."""
    _check_task(task)
    if not isinstance(prefill, str):
        raise TypeError(f"prefill must be a str, got {type(prefill).__name__}")
    return tokenizer.apply_chat_template([{"role": "user", "content": task.prompt}], tokenize=False,
                                         add_generation_prompt=True) + prefill


def direct_vs_worked(model, tokenizer, tasks: list[Task], *, batch_size: int = 64,
                     max_new_tokens: int = 40) -> dict[str, list[bool]]:
    """A chat model's exact match with its work (its normal reply) and without it, on the same tasks.

    worked: the reply it writes unprompted ('7+9=16 5+3+1=9 2+4=6 so 696').
    direct: the assistant's turn prefilled with ' so ' (data.ANSWER_MARKER), the tokens that preceded every answer
    in SFT, so the next tokens must be the answer with no work before it.
    Returns {"direct": [bool per task], "worked": [bool per task]}.
    """
    check_items("tasks", tasks, Task, "data.Task")
    plain = sorted({t.family for t in tasks if not t.work})
    if plain:
        raise ValueError(f"tasks must all show work (families {list(WORKED_FAMILIES)}), got tasks of {plain}")
    out = {}
    for name, prefill in (("direct", ANSWER_MARKER), ("worked", "")):
        prompts = [chat_prompt(tokenizer, t, prefill) for t in tasks]
        replies = complete(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        out[name] = [check_answer(t, r) for t, r in zip(tasks, replies)]
    return out
