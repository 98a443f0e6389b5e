"""How a preference-tuned model is measured: held-out pair metrics, greedy replies (style, accuracy, length),
held-out accuracy during training, the KL to the reference on the policy's own samples, per-token log-prob changes
(likelihood displacement), and a per-family accuracy table."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .. import evaluation
from ..checks import check_int, check_items
from ..data import Task, check_answer
from ..evaluation import family_accuracy
from ..grpo import completion_logprobs, sample_completions
from ..train import latest_checkpoint, train
from .losses import _forward_token_logps, token_kl
from .pairs import ANSWER_TEMPLATE, collate_pairs, parse_reply


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


@torch.no_grad()
def sampled_kl(model, ref_model, tokenizer, prompts: list[str], *, samples_per_prompt: int = 4,
               max_new_tokens: int = 40, seed: int = 0) -> dict:
    """KL(π ‖ π_ref) per reply, estimated on replies sampled from `model` at temperature 1.

    The estimate is the mean over samples y ~ π of log π(y|x) − log π_ref(y|x), summed over the reply's tokens
    (unbiased for the sequence-level KL). Returns "kl" and "se" (nats per reply), "mean_tokens" (reply length).
    """
    rollout = sample_completions(model, tokenizer, prompts, samples_per_prompt, max_new_tokens,
                                 generator=torch.Generator().manual_seed(seed))
    C = rollout.completion_ids.shape[1]
    mask = rollout.completion_mask.bool()  # (N, C)
    was_training = model.training
    model.eval()
    try:
        logp = completion_logprobs(model, rollout.input_ids, rollout.attention_mask, C)  # (N, C)
        ref_logp = completion_logprobs(ref_model, rollout.input_ids, rollout.attention_mask, C)
    finally:
        model.train(was_training)
    per_reply = torch.where(mask, logp - ref_logp, 0.0).sum(1)  # (N,)
    n = per_reply.numel()
    return {"kl": per_reply.mean().item(), "se": (per_reply.std() / n ** 0.5).item() if n > 1 else float("nan"),
            "mean_tokens": mask.sum(1).float().mean().item()}


def evaluate_replies(model, tokenizer, tasks: list[Task], *, template: str = ANSWER_TEMPLATE,
                     max_new_tokens: int = 40) -> dict:
    """Greedy replies on `tasks`: style rate (follows template), accuracy (right answer, either style), mean length.

    Also "correct" (0/1 per task, in order: for paired comparisons with stats.check_gain) and "replies".
    """
    from ..sft import generate_replies

    check_items("tasks", tasks, Task, "data.Task")
    replies = generate_replies(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=max_new_tokens)
    parsed = [parse_reply(r, template) for r in replies]
    correct = [check_answer(t, ans) for t, (_, ans) in zip(tasks, parsed)]
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies]
    return {"style_rate": sum(ok for ok, _ in parsed) / len(tasks), "accuracy": sum(correct) / len(tasks),
            "per_family": family_accuracy(tasks, correct),
            "mean_tokens": sum(lengths) / len(lengths), "correct": [int(c) for c in correct], "replies": replies}


def train_and_track(model, tokenizer, loss_fn, batch_fn, cfg, tasks: list[Task], every: int, *,
                    on_eval: Callable[[dict], None] | None = None) -> tuple:
    """train.train in segments of `every` steps, scoring greedy exact match on the fixed `tasks` before the first
    step and after each segment (the run checkpoints at each stop and resumes, so it equals one uninterrupted run).
    on_eval: called with the curve so far after each evaluation (e.g. a live plot).

    cfg: a train.TrainConfig with checkpoint_dir set (an empty folder). Returns (the TrainResult of the whole run, whose
    seconds are summed over the segments, training only; {step: [0/1 per task]}).
    """
    check_int("every", every)
    if cfg.checkpoint_dir is None:
        raise ValueError("cfg.checkpoint_dir must be set: train_and_track resumes from a checkpoint after each evaluation")
    if latest_checkpoint(cfg.checkpoint_dir) is not None:
        raise ValueError(f"cfg.checkpoint_dir {str(cfg.checkpoint_dir)!r} already holds checkpoints; use an empty folder")
    cfg = replace(cfg, save_every=every)
    curve = {0: evaluate_replies(model, tokenizer, tasks)["correct"]}
    result, seconds = None, 0.0
    for stop in [*range(every, cfg.steps, every), cfg.steps]:
        result = train(model, loss_fn, batch_fn, cfg, stop_at_step=stop, resume=result is not None)
        seconds += result.seconds
        curve[stop] = evaluate_replies(model, tokenizer, tasks)["correct"]
        if on_eval is not None:
            on_eval(dict(curve))
    return replace(result, seconds=seconds), curve


@torch.no_grad()
def token_logp_changes(model, ref_model, examples: list[dict], pad_token_id: int) -> list[dict]:
    """Per pair, the log p of every reply token under `ref_model` (before) and `model` (after training).

    examples: tokenize_pair outputs. Returns one dict per pair: "diverge" (index of the first reply token where chosen
    and rejected differ) and, for key in chosen/rejected, "{key}_ids", "{key}_before", "{key}_after" (lists over the
    reply's tokens).
    """
    if not examples:
        raise ValueError("examples must be a non-empty list of tokenize_pair outputs")
    batch = collate_pairs(examples, pad_token_id)  # right padding: reply token j of a row sits at len(prompt) + j
    logps = {}
    for when, m in (("before", ref_model), ("after", model)):
        was_training = m.training
        m.eval()
        try:
            logps[when] = _forward_token_logps(m, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])[0]
        finally:
            m.train(was_training)
    B, rows = len(examples), []
    for i, e in enumerate(examples):
        c, r = e["chosen_ids"], e["rejected_ids"]
        row = {"diverge": next((j for j, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))}
        start = len(e["prompt_ids"]) - 1  # position that predicts the first reply token
        for key, idx, ids in (("chosen", i, c), ("rejected", B + i, r)):
            row[f"{key}_ids"] = list(ids)
            for when in ("before", "after"):
                row[f"{key}_{when}"] = logps[when][idx, start:start + len(ids)].tolist()
        rows.append(row)
    return rows


def displacement_summary(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Mean change of log p (after − before) per token by where it sits, averaged per pair first: the shared prefix,
    the first differing token of each reply, and each reply's tokens after it. {part: (mean, SE, pairs)}."""
    parts: dict[str, list[float]] = {"shared prefix": [], "chosen: first differing token": [],
                                     "rejected: first differing token": [], "chosen: after it": [],
                                     "rejected: after it": []}
    for row in rows:
        d = row["diverge"]
        delta = {k: [a - b for a, b in zip(row[f"{k}_after"], row[f"{k}_before"])] for k in ("chosen", "rejected")}
        if d > 0:
            parts["shared prefix"].append(sum(delta["chosen"][:d]) / d)
        for k in ("chosen", "rejected"):
            if d < len(delta[k]):
                parts[f"{k}: first differing token"].append(delta[k][d])
            if d + 1 < len(delta[k]):
                parts[f"{k}: after it"].append(sum(delta[k][d + 1:]) / (len(delta[k]) - d - 1))
    out = {}
    for part, xs in parts.items():
        n = len(xs)
        mean = sum(xs) / n if n else float("nan")
        var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else float("nan")
        out[part] = (mean, (var / n) ** 0.5 if n > 1 else float("nan"), n)
    return out


def accuracy_table(results: dict[str, dict], tasks: list[Task]) -> str:
    """Per-family exact match of several models on the same `tasks`, with n, 95 % intervals and baselines.

    results: {model name: evaluate_replies(...) on `tasks`}. One row per family plus "all"; the `majority` column is
    the accuracy of always giving the family's most common answer. The table is evaluation.accuracy_table's.
    """
    return evaluation.accuracy_table(tasks, results, digits=3, width=21, answers=False, total="all")
