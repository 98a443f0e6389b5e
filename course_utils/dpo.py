"""Preference alignment: DPO (with a frozen reference model) and SimPO (without one), from scratch.

    pairs = make_preference_pairs(256, "train", seed=0)          # (prompt, chosen, rejected), checkable preference
    batch = collate_pairs(tokenize_pairs(tokenizer, pairs[:8]), tokenizer.pad_token_id)
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])  # (2B,)
    losses, r_c, r_r = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=0.1)

DPO: Rafailov et al. 2023, "Direct Preference Optimization" (arXiv:2305.18290).
Online DPO (fresh pairs sampled from the policy being trained): Guo et al. 2024, "Direct Language Model Alignment
from Online AI Feedback" (arXiv:2402.04792).
SimPO: Meng, Xia and Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward" (arXiv:2405.14734).
Batches hold the chosen completions first, then the rejected ones (as in trl), so `x.chunk(2)` splits them.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from .data import TASK_FAMILIES, Task, check_answer, make_tasks
from .grpo import sample_completions
from .train import random_batches

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
    if isinstance(style_fraction, bool) or not isinstance(style_fraction, (int, float)) or not 0 <= style_fraction <= 1:
        raise ValueError(f"style_fraction must be in [0, 1], got {style_fraction!r}")
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


def evaluate_replies(model, tokenizer, tasks: list[Task], *, template: str = ANSWER_TEMPLATE,
                     max_new_tokens: int = 40) -> dict:
    """Greedy replies on `tasks`: style rate (follows template), accuracy (right answer, either style), mean length.

    Also "correct" (0/1 per task, in order: for paired comparisons with stats.check_gain) and "replies".
    """
    from .sft import generate_replies

    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    replies = generate_replies(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=max_new_tokens)
    parsed = [parse_reply(r, template) for r in replies]
    correct = [check_answer(t, ans) for t, (_, ans) in zip(tasks, parsed)]
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies]
    fams = [f for f in TASK_FAMILIES if any(t.family == f for t in tasks)]
    return {"style_rate": sum(ok for ok, _ in parsed) / len(tasks), "accuracy": sum(correct) / len(tasks),
            "per_family": {f: sum(c for t, c in zip(tasks, correct) if t.family == f) / sum(t.family == f for t in tasks)
                           for f in fams},
            "mean_tokens": sum(lengths) / len(lengths), "correct": [int(c) for c in correct], "replies": replies}


def accuracy_table(results: dict[str, dict], tasks: list[Task]) -> str:
    """Per-family exact match of several models on the same `tasks`, with n, 95 % intervals and baselines.

    results: {model name: evaluate_replies(...) on `tasks`}. One row per family plus "all"; the `majority` column is
    the accuracy of always giving the family's most common answer (stats.majority_baseline).
    """
    from .stats import binomial_ci, majority_baseline

    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {name: evaluate_replies(...) output}")
    for name, res in results.items():
        if not isinstance(res, dict) or len(res.get("correct", ())) != len(tasks):
            raise ValueError(f"results[{name!r}] must be an evaluate_replies output on these {len(tasks)} tasks "
                             f"(its 'correct' list has {len(res.get('correct', ())) if isinstance(res, dict) else 0})")
    fams = [f for f in TASK_FAMILIES if any(t.family == f for t in tasks)]
    width = max(13, *(len(n) for n in results))
    lines = [f"{'family':9s} {'n':>4s} {'majority':>8s}  " + "  ".join(f"{n:>{width + 8}s}" for n in results)]
    for fam in fams + (["all"] if len(fams) > 1 else []):
        idx = [i for i, t in enumerate(tasks) if fam in ("all", t.family)]
        cells = []
        for res in results.values():
            k = sum(res["correct"][i] for i in idx)
            low, high = binomial_ci(k, len(idx))
            cells.append(f"{k / len(idx):.3f} [{low:.2f}, {high:.2f}]".rjust(width + 8))
        major = majority_baseline([tasks[i].answer for i in idx])[1] if fam != "all" else \
            sum(majority_baseline([t.answer for t in tasks if t.family == f])[1] * sum(t.family == f for t in tasks)
                for f in fams) / len(tasks)
        lines.append(f"{fam:9s} {len(idx):4d} {major:8.3f}  " + "  ".join(cells))
    return "\n".join(lines)


def model_mistake_pairs(model, tokenizer, tasks: list[Task], *, template: str = ANSWER_TEMPLATE,
                        max_new_tokens: int = 40) -> list[PreferencePair]:
    """On-policy pairs: chosen = the right reply in `template`, rejected = the model's own greedy reply when that
    reply is wrong or not in the template (replies that are already preferred are skipped)."""
    from .sft import generate_replies

    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    replies = [r.strip() for r in generate_replies(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=max_new_tokens)]
    return [PreferencePair(t.prompt, template.format(t.reply), r, t.family, "model")
            for t, r in zip(tasks, replies) if r and r != template.format(t.reply)]


def sampled_pairs(model, tokenizer, tasks: list[Task], group_size: int = 4, *, max_new_tokens: int = 40,
                  temperature: float = 1.0, generator: torch.Generator | None = None) -> list[PreferencePair]:
    """Pairs from the model's own samples: `group_size` replies per task; where some are right and some wrong
    (data.check_answer), the first right one is chosen over the first wrong one. Tasks without both give no pair."""
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a pair needs two samples), got {group_size!r}")
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")

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


# ---- tokenization ---------------------------------------------------------------------------------

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


# ---- log-probabilities ----------------------------------------------------------------------------

def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1: logits (B, T, V), input_ids (B, T) -> (B, T-1), in float32.

    Naive equivalent: torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    target = input_ids[:, 1:]  # (B, T-1)
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _check_batch(input_ids, attention_mask, loss_mask) -> None:
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask), ("loss_mask", loss_mask)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (B, T), got {getattr(t, 'shape', type(t).__name__)}")
    if not (input_ids.shape == attention_mask.shape == loss_mask.shape):
        raise ValueError(f"input_ids, attention_mask and loss_mask must have the same shape (B, T), got "
                         f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(loss_mask.shape)}")
    lm = loss_mask.bool()
    empty = (~lm[:, 1:]).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"loss_mask marks no completion token (after position 0) in rows {empty}: "
                         f"every sequence needs a non-empty completion")
    if lm[:, 0].any():
        raise ValueError("loss_mask[:, 0] must be False: the first token has no context to be predicted from")
    if (lm & ~attention_mask.bool()).any():
        raise ValueError("loss_mask marks padding (attention_mask == 0) as completion tokens")


def _forward_token_logps(model, input_ids, attention_mask, loss_mask, *, return_logits: bool = False):
    """Completion-token log-probs (B, T-1) (0 elsewhere) and the shifted mask (B, T-1); logits too if asked."""
    _check_batch(input_ids, attention_mask, loss_mask)
    dev = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    mask = loss_mask.to(dev).bool()[:, 1:]  # (B, T-1): token t+1 is scored at position t
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T): positions restart after left padding
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits  # (B, T, V)
    logps = torch.where(mask, token_logprobs(logits, input_ids), 0.0)  # where, not *: padded rows may hold NaN
    return (logps, mask, logits) if return_logits else (logps, mask)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                      average: bool = False) -> torch.Tensor:
    """Sum (or mean, average=True) of log p(token) over the completion tokens: each (B, T) -> (B,).

    loss_mask is True on completion tokens (never position 0); works with left or right padding.
    """
    logps, mask = _forward_token_logps(model, input_ids, attention_mask, loss_mask)
    total = logps.sum(dim=1)  # (B,)
    return total / mask.sum(dim=1) if average else total


# ---- losses ----------------------------------------------------------------------------------------

def _check_logps(names: tuple[str, ...], tensors: tuple) -> None:
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor (B,), got {getattr(t, 'shape', type(t).__name__)}")
    shapes = {name: tuple(t.shape) for name, t in zip(names, tensors)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"batch sizes must match, got {shapes}")
    if tensors[0].numel() == 0:
        raise ValueError("log-prob tensors are empty (B = 0)")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1, *,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss -log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)]); all inputs (B,).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); reward = β·(log π - log π_ref), detached.
    label_smoothing ε > 0 gives conservative DPO: (1-ε)·loss(Δ) + ε·loss(-Δ) (labels flipped with probability ε).
    """
    _check_logps(("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
                 (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))
    _check_positive("beta", beta)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss -log σ(β·avg log π_c - β·avg log π_r - γ); inputs are per-token average log-probs (B,).

    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); reward = β·avg log π, detached. No reference model.
    """
    _check_logps(("chosen_avg_logps", "rejected_avg_logps"), (chosen_avg_logps, rejected_avg_logps))
    _check_positive("beta", beta)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    chosen_rewards, rejected_rewards = beta * chosen_avg_logps, beta * rejected_avg_logps  # (B,)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of KL(π ‖ π_ref) = Σ_v π log(π/π_ref): logits (B, T, V), mask (B, T) -> scalar."""
    if policy_logits.shape != ref_logits.shape or policy_logits.shape[:2] != mask.shape:
        raise ValueError(f"policy_logits, ref_logits must be (B, T, V) and mask (B, T); got {tuple(policy_logits.shape)}, "
                         f"{tuple(ref_logits.shape)}, {tuple(mask.shape)}")
    logp = torch.log_softmax(policy_logits.float(), -1)  # (B, T, V)
    logq = torch.log_softmax(ref_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (B, T)
    return kl[mask.bool()].mean()


# ---- training ---------------------------------------------------------------------------------------

@dataclass
class PreferenceConfig:
    """Which preference loss and its knobs (the optimizer and schedule live in train.TrainConfig)."""

    method: str = "dpo"  # "dpo" (needs a frozen reference model) | "simpo" (reference-free)
    beta: float = 0.1  # DPO: strength of the KL leash; SimPO: reward scale (the paper uses 2-2.5)
    gamma: float = 1.0  # SimPO target margin in reward units (ignored by DPO)
    label_smoothing: float = 0.0  # DPO only: conservative-DPO label noise
    sft_weight: float = 0.0  # DPO only: + w * mean NLL of the chosen tokens (RPO; trl loss_type=["sigmoid", "sft"])


def _dpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    logps, mask, logits = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                               return_logits=True)
    with torch.no_grad():
        ref_logps, _, ref_logits = _forward_token_logps(ref_model, batch["input_ids"], batch["attention_mask"],
                                                        batch["loss_mask"], return_logits=True)
    pc, pr = logps.sum(1).chunk(2)  # (B,) each: chosen rows first
    rc, rr = ref_logps.sum(1).chunk(2)
    losses, r_c, r_r = dpo_loss(pc, pr, rc, rr, cfg.beta, label_smoothing=cfg.label_smoothing)
    kl = token_kl(logits[:, :-1].detach(), ref_logits[:, :-1], mask)
    loss = losses.mean()
    if cfg.sft_weight:  # keep the chosen replies likely: pure DPO can lower them along with the rejected ones
        B = pc.shape[0]
        loss = loss + cfg.sft_weight * -logps[:B][mask[:B]].mean()
    return loss, _metrics(r_c, r_r, pc, pr, mask) | {"kl": kl.item()}


def _simpo_step(model, ref_model, batch, cfg: PreferenceConfig):
    logps, mask = _forward_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    avg = logps.sum(1) / mask.sum(1)  # (2B,) per-token average
    ac, ar = avg.chunk(2)
    losses, r_c, r_r = simpo_loss(ac, ar, cfg.beta, cfg.gamma)
    pc, pr = logps.sum(1).chunk(2)
    return losses.mean(), _metrics(r_c, r_r, pc, pr, mask)


def _metrics(r_c, r_r, pc, pr, mask) -> dict[str, float]:
    return {"acc": (r_c > r_r).float().mean().item(), "margin": (r_c - r_r).mean().item(),
            "logp_chosen": pc.detach().mean().item(), "logp_rejected": pr.detach().mean().item()}


# Each method: (policy, reference or None, batch, PreferenceConfig) -> (mean loss, metrics dict).
PREFERENCE_METHODS: dict[str, Callable] = {"dpo": _dpo_step, "simpo": _simpo_step}


def make_loss_fn(cfg: PreferenceConfig, ref_model=None) -> Callable:
    """A `loss_fn(model, batch) -> (loss, metrics)` for train.train; DPO needs the frozen `ref_model`."""
    if not isinstance(cfg, PreferenceConfig):
        raise TypeError(f"cfg must be a PreferenceConfig, got {type(cfg).__name__}")
    if cfg.method not in PREFERENCE_METHODS:
        raise ValueError(f"cfg.method must be one of {list(PREFERENCE_METHODS)}, got {cfg.method!r}")
    _check_positive("cfg.beta", cfg.beta)
    if isinstance(cfg.sft_weight, bool) or not isinstance(cfg.sft_weight, (int, float)) or not cfg.sft_weight >= 0:
        raise ValueError(f"cfg.sft_weight must be a number >= 0, got {cfg.sft_weight!r}")
    if cfg.method == "dpo" and ref_model is None:
        raise ValueError("method 'dpo' needs ref_model (a frozen copy of the starting policy); use frozen_copy(model)")
    step = PREFERENCE_METHODS[cfg.method]
    return lambda model, batch: step(model, ref_model, batch, cfg)


def frozen_copy(model):
    """A deep copy of `model` in eval mode with requires_grad=False: the DPO reference policy."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def make_pair_batch_fn(examples: list[dict], batch_size: int, pad_token_id: int, seed: int = 0) -> Callable:
    """Deterministic data source for train.train: step -> a batch of `batch_size` random pairs (2·batch_size rows)."""
    return random_batches(examples, batch_size, lambda rows: collate_pairs(rows, pad_token_id), seed, replacement=False)


@torch.no_grad()
def evaluate_pairs(model, examples: list[dict], pad_token_id: int, *, ref_model=None, beta: float = 0.1,
                   batch_size: int = 64, per_pair: bool = False) -> dict:
    """Held-out pair metrics: log-probs of chosen/rejected and, with ref_model, DPO reward accuracy, margin and KL.

    "avg_acc" (per-token average log-prob of chosen > rejected) is SimPO's ranking and needs no reference.
    per_pair=True adds the per-pair values behind the means (lists in pair order, for standard errors):
    "avg_correct", "logp_chosen_each", "logp_rejected_each" and, with ref_model, "dpo_correct", "margin_each".
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"pc": [], "pr": [], "ac": [], "ar": [], "margin": []}
    kl_sum, n_tok = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            b = collate_pairs(examples[i:i + batch_size], pad_token_id)
            logps, mask, logits = _forward_token_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"],
                                                       return_logits=True)
            pc, pr = logps.sum(1).chunk(2)  # (B,) each
            ac, ar = (logps.sum(1) / mask.sum(1)).chunk(2)
            parts["pc"].append(pc), parts["pr"].append(pr), parts["ac"].append(ac), parts["ar"].append(ar)
            if ref_model is not None:
                rl, _, ref_logits = _forward_token_logps(ref_model, b["input_ids"], b["attention_mask"], b["loss_mask"],
                                                         return_logits=True)
                rc, rr = rl.sum(1).chunk(2)
                parts["margin"].append(beta * ((pc - rc) - (pr - rr)))
                kl_sum += token_kl(logits[:, :-1], ref_logits[:, :-1], mask).item() * int(mask.sum())
                n_tok += int(mask.sum())
    finally:
        model.train(was_training)
    cat = {k: torch.cat(v) for k, v in parts.items() if v}
    out = {"logp_chosen": cat["pc"].mean().item(), "logp_rejected": cat["pr"].mean().item(),
           "avg_acc": (cat["ac"] > cat["ar"]).float().mean().item()}
    if ref_model is not None:
        out["dpo_acc"] = (cat["margin"] > 0).float().mean().item()
        out["dpo_margin"] = cat["margin"].mean().item()
        out["kl"] = kl_sum / n_tok
    if per_pair:
        out["avg_correct"] = (cat["ac"] > cat["ar"]).int().tolist()
        out["logp_chosen_each"], out["logp_rejected_each"] = cat["pc"].tolist(), cat["pr"].tolist()
        if ref_model is not None:
            out["dpo_correct"] = (cat["margin"] > 0).int().tolist()
            out["margin_each"] = cat["margin"].tolist()
    return out


def model_bytes(model) -> int:
    """Bytes held by a model's parameters and buffers (what keeping a reference model costs)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


# ---- the same with trl ---------------------------------------------------------------------------------

def to_trl_dataset(pairs: list[PreferencePair]):
    """A datasets.Dataset in trl's conversational preference format: prompt / chosen / rejected message lists."""
    from datasets import Dataset

    if not pairs or not all(isinstance(p, PreferencePair) for p in pairs):
        raise ValueError("pairs must be a non-empty list of PreferencePair")
    return Dataset.from_list([{"prompt": [{"role": "user", "content": p.prompt}],
                               "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def trl_dpo_train(model, tokenizer, pairs: list[PreferencePair], output_dir: str, *, steps: int = 10,
                  batch_size: int = 8, lr: float = 5e-4, beta: float = 0.1, lora_r: int | None = None,
                  seed: int = 0, logging_steps: int = 1, quiet: bool = True):
    """Train with trl's DPOTrainer (loss_type="sigmoid"), optionally through a peft LoRA config; returns the trainer.

    The reference model is a frozen copy (full fine-tuning) or the base with adapters off (LoRA), as trl does.
    quiet: no progress bars or printed log dicts (the logs stay in trainer.state.log_history; see trl_history).
    """
    from trl import DPOConfig, DPOTrainer

    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    _check_positive("beta", beta)
    peft_config = None
    if lora_r is not None:
        from peft import LoraConfig

        if not isinstance(lora_r, int) or lora_r < 1:
            raise ValueError(f"lora_r must be None or a positive int, got {lora_r!r}")
        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # trl 1.16 calls deprecated gradient-checkpointing names
        args = DPOConfig(output_dir=str(output_dir), loss_type=["sigmoid"], beta=beta, learning_rate=lr, max_steps=steps,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                         lr_scheduler_type="constant", warmup_steps=0, logging_steps=logging_steps, save_strategy="no",
                         report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
                         use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, gradient_checkpointing=False,
                         max_length=None, dataloader_num_workers=0)
        if quiet:
            from datasets.utils.logging import disable_progress_bar
            from transformers import PrinterCallback

            disable_progress_bar()
        trainer = DPOTrainer(model=model, args=args, train_dataset=to_trl_dataset(pairs), processing_class=tokenizer,
                             peft_config=peft_config)
        if quiet:
            trainer.remove_callback(PrinterCallback)  # the per-step log dicts stay in trainer.state.log_history
        trainer.train()
    return trainer


def trl_history(trainer, key: str) -> list[float]:
    """The per-step values of one logged metric (e.g. "loss", "rewards/accuracies") from a trl trainer."""
    return [row[key] for row in trainer.state.log_history if key in row and "train_runtime" not in row]
