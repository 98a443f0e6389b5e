"""How a preference-tuned model is measured: held-out pair metrics, greedy replies (style, accuracy, length)
and a per-family accuracy table."""

from __future__ import annotations

import torch

from .. import evaluation
from ..checks import check_items
from ..data import Task, check_answer
from ..evaluation import family_accuracy
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


def accuracy_table(results: dict[str, dict], tasks: list[Task]) -> str:
    """Per-family exact match of several models on the same `tasks`, with n, 95 % intervals and baselines.

    results: {model name: evaluate_replies(...) on `tasks`}. One row per family plus "all"; the `majority` column is
    the accuracy of always giving the family's most common answer. The table is evaluation.accuracy_table's.
    """
    return evaluation.accuracy_table(tasks, results, digits=3, width=21, answers=False, total="all")
