"""Where preference pairs come from: rule-made pairs with a checkable preference, the model's own mistakes, pairs
sampled from the policy (online DPO); and how pairs become token ids and batches (chosen rows first)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..checks import check_int, check_items, check_number
from ..data import Task, check_answer, make_tasks
from ..grpo import sample_completions
from ..train import random_batches


# ---- preference data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """One preference: the user prompt, the preferred reply, the dispreferred reply, and where it came from."""

    prompt: str
    chosen: str
    rejected: str
    family: str
    # "wrong" (a rule-made wrong answer), "style" (right answer, wrong style), "model" (the model's own greedy reply),
    # "sampled" (both replies sampled from the model: a right one over a wrong one)
    source: str = "wrong"


def _wrong_addition(task: Task, rng: random.Random) -> str:
    value = int(task.answer)
    offset = rng.choice([1, 10, 100, -1, -10, -100])  # a carry slip in one digit
    return str(value + offset if value + offset >= 0 else value + abs(offset))


def _wrong_reverse(task: Task, rng: random.Random) -> str:
    word = task.answer[::-1]  # the original word
    letters = list(task.answer)
    i = rng.randrange(len(letters) - 1)
    letters[i], letters[i + 1] = letters[i + 1], letters[i]  # two neighbours swapped
    swapped = "".join(letters)
    return rng.choice([word, swapped]) if swapped != task.answer else word


def _wrong_sort(task: Task, rng: random.Random) -> str:
    nums = task.prompt.removeprefix("Sort these numbers: ").removesuffix(".").split()
    options = [" ".join(nums), " ".join(sorted(nums, key=int, reverse=True))]
    answer = task.answer.split()
    i = rng.randrange(len(answer) - 1)
    answer[i], answer[i + 1] = answer[i + 1], answer[i]
    options.append(" ".join(answer))
    options = [o for o in options if o != task.answer]
    return rng.choice(options) if options else task.answer + " " + answer[0]


def _wrong_count(task: Task, rng: random.Random) -> str:
    value = int(task.answer)
    return str(value + 1 if value == 0 or rng.random() < 0.5 else value - 1)


def _wrong_format(task: Task, rng: random.Random) -> str:
    word = task.answer[1:-1]
    return rng.choice([word, word.lower(), f"[{word.lower()}]", f"({word})"])


# How a wrong answer is made for each task family: one function (task, rng) -> a string != task.answer.
CORRUPTIONS: dict[str, Callable[[Task, random.Random], str]] = {
    "addition": _wrong_addition,
    "reverse": _wrong_reverse,
    "sort": _wrong_sort,
    "count": _wrong_count,
    "format": _wrong_format,
}


# How a reply is written: "{}" = the reply as SFT taught it (task.reply). A style such as "Answer: {}" turns half of
# the pairs into style pairs (right reply, wrong style); in our runs DPO did not teach a style the SFT model never
# produced: it re-ranks behaviours the model already has.
ANSWER_TEMPLATE = "{}"


def make_preference_pairs(n: int, split: str = "train", *, seed: int = 0, families: list[str] | None = None,
                          template: str = ANSWER_TEMPLATE, style_fraction: float = 0.5) -> list[PreferencePair]:
    """`n` pairs from `split`, deterministic in `seed`; chosen is always the right reply (task.reply) in `template`.

    rejected is either the right reply in the wrong style (bare, as the SFT model writes it; source "style",
    a fraction `style_fraction` of the pairs) or a reply with a plausible wrong answer in the right style (source
    "wrong"; for addition the work stays and only the conclusion after "so" is wrong).
    With template "{}" every pair is a correctness pair.
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template must be a string with exactly one '{{}}' for the answer, got {template!r}")
    check_number("style_fraction", style_fraction, 0, 1)
    tasks = make_tasks(n, split, seed=seed, families=families)  # validates n, split and families
    rng = random.Random(seed + 7919)
    pairs = []
    for task in tasks:
        chosen = template.format(task.reply)
        if template != "{}" and rng.random() < style_fraction:
            pairs.append(PreferencePair(task.prompt, chosen, task.reply, task.family, "style"))
            continue
        wrong = CORRUPTIONS[task.family](task, rng)
        if wrong == task.answer:  # cannot happen with the rules above; kept as a guard
            raise RuntimeError(f"corruption returned the right answer for {task}")
        wrong_reply = replace(task, answer=wrong).reply  # same work (if any), wrong conclusion
        pairs.append(PreferencePair(task.prompt, chosen, template.format(wrong_reply), task.family, "wrong"))
    return pairs


def parse_reply(reply: str, template: str = ANSWER_TEMPLATE) -> tuple[bool, str]:
    """(does the reply follow the template, the answer inside it — or the whole stripped reply when it does not)."""
    prefix, suffix = template.split("{}")
    text = reply.strip()
    ok = text.startswith(prefix.strip()) and text.endswith(suffix) and len(text) > len(prefix.strip() + suffix)
    return ok, (text[len(prefix.strip()):len(text) - len(suffix)].strip() if ok else text)


def model_mistake_pairs(model, tokenizer, tasks: list[Task], *, template: str = ANSWER_TEMPLATE,
                        max_new_tokens: int = 40) -> list[PreferencePair]:
    """On-policy pairs: chosen = the right reply in `template`, rejected = the model's own greedy reply when that
    reply is wrong or not in the template (replies that are already preferred are skipped)."""
    from ..sft import generate_replies

    check_items("tasks", tasks, Task, "data.Task")
    replies = [r.strip() for r in generate_replies(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=max_new_tokens)]
    return [PreferencePair(t.prompt, template.format(t.reply), r, t.family, "model")
            for t, r in zip(tasks, replies) if r and r != template.format(t.reply)]


def sampled_pairs(model, tokenizer, tasks: list[Task], group_size: int = 4, *, max_new_tokens: int = 40,
                  temperature: float = 1.0, generator: torch.Generator | None = None) -> list[PreferencePair]:
    """Pairs from the model's own samples: `group_size` replies per task; where some are right and some wrong
    (data.check_answer), the first right one is chosen over the first wrong one. Tasks without both give no pair."""
    check_items("tasks", tasks, Task, "data.Task")
    check_int("group_size", group_size, 2, allowed="an int >= 2 (a pair needs two samples)")
    rollout = sample_completions(model, tokenizer, [t.prompt for t in tasks], group_size, max_new_tokens,
                                 temperature=temperature, generator=generator)
    pairs = []
    for i, task in enumerate(tasks):
        replies = [r.strip() for r in rollout.texts[i * group_size:(i + 1) * group_size]]
        right = [r for r in replies if check_answer(task, r)]
        wrong = [r for r in replies if r and not check_answer(task, r)]
        if right and wrong:
            pairs.append(PreferencePair(task.prompt, right[0], wrong[0], task.family, "sampled"))
    return pairs


def make_online_pair_batch_fn(model, tokenizer, tasks: list[Task], batch_size: int, *, group_size: int = 4,
                              max_new_tokens: int = 40, seed: int = 0, max_draws: int = 20) -> Callable:
    """Online DPO data source for train.train: step -> `batch_size` fresh pairs sampled from `model` as it is now.

    Each draw samples `group_size` replies for `batch_size` random prompts from `tasks` (sampled_pairs) until there are
    `batch_size` pairs. The prompts and sampling noise depend only on (seed, step), so a resumed run draws alike.
    """
    check_int("batch_size", batch_size)
    check_items("tasks", tasks, Task, "data.Task")

    def batch(step: int) -> dict[str, torch.Tensor]:
        rng = random.Random(seed * 1_000_003 + step)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        pairs: list[PreferencePair] = []
        for _ in range(max_draws):
            drawn = [tasks[rng.randrange(len(tasks))] for _ in range(batch_size)]
            pairs += sampled_pairs(model, tokenizer, drawn, group_size, max_new_tokens=max_new_tokens, generator=generator)
            if len(pairs) >= batch_size:
                return collate_pairs(tokenize_pairs(tokenizer, pairs[:batch_size]), tokenizer.pad_token_id)
        raise RuntimeError(f"only {len(pairs)} of {batch_size} pairs after {max_draws} draws of {batch_size} prompts: "
                           "the model's samples are almost all right or all wrong on these tasks. Use tasks it solves "
                           "sometimes, a larger group_size, or offline pairs (make_preference_pairs).")

    return batch


# ---- tokenization and batches ------------------------------------------------------------------------

def tokenize_pair(tokenizer, pair: PreferencePair, *, trl_style: bool = False) -> dict[str, list[int]]:
    """Chat-format token ids: prompt_ids, chosen_ids, rejected_ids (each completion follows the generation prompt).

    A completion ends with the end-of-turn token <|im_end|> (what generation produces before it stops);
    trl_style=True keeps everything the template adds after the prompt, as trl does (here also a trailing newline).
    """
    if not isinstance(pair, PreferencePair):
        raise TypeError(f"pair must be a PreferencePair, got {type(pair).__name__}")
    user = [{"role": "user", "content": pair.prompt}]
    prompt_ids = tokenizer.apply_chat_template(user, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    stop = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    out = {"prompt_ids": list(prompt_ids)}
    for key, reply in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not reply:
            raise ValueError(f"pair.{key} is empty: a completion needs at least one token (prompt {pair.prompt!r})")
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": reply}], tokenize=True,
                                             return_dict=True)["input_ids"]
        if list(full[:len(prompt_ids)]) != out["prompt_ids"]:
            raise ValueError(f"the tokenized prompt is not a prefix of prompt + {key} for {pair.prompt!r}")
        completion = list(full[len(prompt_ids):])
        if not trl_style:
            ends = [i for i, tok in enumerate(completion) if tok in stop]
            completion = completion[:ends[0] + 1] if ends else completion
        out[f"{key}_ids"] = completion
    return out


def tokenize_pairs(tokenizer, pairs: list[PreferencePair], *, trl_style: bool = False) -> list[dict[str, list[int]]]:
    """`tokenize_pair` over a list."""
    if not pairs:
        raise ValueError("pairs must be a non-empty list of PreferencePair")
    return [tokenize_pair(tokenizer, p, trl_style=trl_style) for p in pairs]


def collate_pairs(examples: list[dict], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Stack B tokenized pairs into one batch of 2B rows: chosen rows 0..B-1, rejected rows B..2B-1.

    Returns input_ids, attention_mask, loss_mask (True on completion tokens), each (2B, T).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not examples:
        raise ValueError("examples must be a non-empty list of tokenize_pair outputs")
    rows = [(e["prompt_ids"], e[k]) for k in ("chosen_ids", "rejected_ids") for e in examples]
    T = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)  # (2B, T)
    attn = torch.zeros((len(rows), T), dtype=torch.long)  # (2B, T)
    loss_mask = torch.zeros((len(rows), T), dtype=torch.bool)  # (2B, T)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        start = 0 if padding_side == "right" else T - n
        ids[i, start:start + n] = torch.tensor(p + c)
        attn[i, start:start + n] = 1
        loss_mask[i, start + len(p):start + n] = True
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def make_pair_batch_fn(examples: list[dict], batch_size: int, pad_token_id: int, seed: int = 0) -> Callable:
    """Deterministic data source for train.train: step -> a batch of `batch_size` random pairs (2·batch_size rows)."""
    return random_batches(examples, batch_size, lambda rows: collate_pairs(rows, pad_token_id), seed, replacement=False)
