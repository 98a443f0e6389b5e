"""Judging replies with a model instead of a verifier, and the statistics of its verdicts.

Two kinds of judge, one interface (pairs of a right and a wrong reply, dpo.PreferencePair with chosen = right):
- pairwise (MT-Bench style, Zheng et al. 2023, arXiv:2306.05685): a chat model reads the question and both replies
  and answers "A" or "B"; its margin is logit("A") - logit("B") at its first reply token, one per order shown;
- pointwise: each reply gets a score alone (a reward model, or the model's own log-likelihood of the reply), so the
  order cannot matter.

    m = pairwise_margins(judge, tok, pairs)       # (N, 2): right reply shown as A / as B
    print(position_stats(m))                      # accuracy, share of "A", swap consistency, swap-averaged accuracy
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..checks import check_choice, check_items
from ..stats import mean_sd

JUDGE_TEMPLATE = ("Question: {question}\nReply A: {reply_a}\nReply B: {reply_b}\n"
                  "Which reply is correct? Answer A or B.")
PREAMBLE = "Sure! Let me work this out carefully, step by step. "  # adds length, not content


def judge_prompt(question: str, reply_a: str, reply_b: str) -> str:
    """The user message a pairwise judge sees (JUDGE_TEMPLATE filled in)."""
    return JUDGE_TEMPLATE.format(question=question, reply_a=reply_a, reply_b=reply_b)


def _pairs(pairs) -> list:
    from ..dpo import PreferencePair

    check_items("pairs", pairs, PreferencePair, "dpo.PreferencePair")
    return list(pairs)


def _letter_ids(tokenizer) -> tuple[int, int]:
    ids = [tokenizer.encode(x, add_special_tokens=False) for x in ("A", "B")]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the tokenizer must encode 'A' and 'B' as one token each, got {ids}")
    return ids[0][0], ids[1][0]


@torch.no_grad()
def pairwise_margins(judge, tokenizer, pairs: Sequence, *, batch_size: int = 64) -> torch.Tensor:
    """A chat model's logit("A") - logit("B") for each pair shown both ways: (N, 2) float64.

    Column 0: the right reply (chosen) is Reply A; column 1: it is Reply B. A judge that finds the right reply has
    column 0 > 0 and column 1 < 0; one that always says "A" has both > 0.
    """
    pairs = _pairs(pairs)
    a_id, b_id = _letter_ids(tokenizer)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": judge_prompt(p.prompt, first, second)}],
                                           tokenize=False, add_generation_prompt=True)
             for p in pairs for first, second in ((p.chosen, p.rejected), (p.rejected, p.chosen))]
    dev = next(judge.parameters()).device
    was_training, side = judge.training, tokenizer.padding_side
    judge.eval()
    tokenizer.padding_side = "left"  # the last position is then every row's next-token position
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            logits = judge(**enc).logits[:, -1].double()  # (B, V)
            out.append((logits[:, a_id] - logits[:, b_id]).cpu())
    finally:
        tokenizer.padding_side = side
        judge.train(was_training)
    return torch.cat(out).view(-1, 2)  # (N, 2)


@torch.no_grad()
def likelihood_margins(model, tokenizer, pairs: Sequence, *, average: bool = False,
                       batch_size: int = 64) -> torch.Tensor:
    """A pointwise judge from a language model alone: log p(right reply | question) - log p(wrong reply | question),
    summed over the reply's tokens (average=True: per token). (N,) float."""
    from ..dpo import collate_pairs, sequence_logprobs, tokenize_pairs

    pairs = _pairs(pairs)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(pairs), batch_size):
        b = collate_pairs(tokenize_pairs(tokenizer, pairs[i:i + batch_size]), tokenizer.pad_token_id)
        logps = sequence_logprobs(model, *(b[k].to(dev) for k in ("input_ids", "attention_mask", "loss_mask")),
                                  average=average)  # (2B,): right rows, then wrong rows
        right, wrong = logps.chunk(2)
        out.append((right - wrong).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def both_orders(margins: torch.Tensor) -> torch.Tensor:
    """A pointwise judge's margins (N,) in position_stats' (N, 2) form: swapping the replies flips the sign."""
    if not isinstance(margins, torch.Tensor) or margins.dim() != 1:
        raise ValueError(f"margins must be a 1-D tensor (N,), got {getattr(margins, 'shape', margins)}")
    return torch.stack([margins, -margins], dim=1).double()  # (N, 2)


def lengthen(pairs: Sequence, which: str, preamble: str = PREAMBLE) -> list:
    """The pairs with `preamble` put before the right ("chosen") or the wrong ("rejected") reply: longer, same answer."""
    check_choice("which", which, ["chosen", "rejected"])
    return [replace(p, **{which: preamble + getattr(p, which)}) for p in _pairs(pairs)]


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Agreement of two raters beyond chance: (p_o - p_e) / (1 - p_e), p_e from each rater's own label frequencies
    (Cohen 1960). 1 = always agree, 0 = no better than two raters guessing at their own base rates."""
    a, b = list(a), list(b)
    if len(a) != len(b) or not a:
        raise ValueError(f"a and b must be non-empty and of the same length, got {len(a)} and {len(b)}")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def _mean_se(per_pair: torch.Tensor) -> tuple[float, float]:
    """Mean over pairs and its standard error (each pair is one independent unit; nan for a single pair)."""
    mean, sd = mean_sd(per_pair.tolist())
    return mean, sd / len(per_pair) ** 0.5 if len(per_pair) > 1 else float("nan")


def position_stats(margins: torch.Tensor) -> dict[str, tuple[float, float]]:
    """What a judge's (N, 2) margins (pairwise_margins, or both_orders for a pointwise judge) say, each as
    (value, standard error over pairs):

    accuracy: right verdicts when each pair is shown once in a random order (the mean of both orders);
    says_A: share of verdicts picking Reply A (0.5 = no position bias: the right reply is A half the time);
    consistent: share of pairs whose verdict stays on the same reply when the two swap places;
    accuracy_swapped: right verdicts from the mean of both orders' margins (judge twice, average);
    kappa: Cohen's kappa of the judge's letters against the verifier's, both orders (no SE: nan).
    """
    if not isinstance(margins, torch.Tensor) or margins.dim() != 2 or margins.shape[1] != 2 or len(margins) == 0:
        raise ValueError(f"margins must be an (N, 2) tensor, got {getattr(margins, 'shape', margins)}")
    right = torch.stack([margins[:, 0] > 0, margins[:, 1] < 0], dim=1).double()  # (N, 2): picked the right reply
    says_a = (margins > 0).double()  # (N, 2)
    letters = ["A" if x else "B" for x in says_a.flatten().tolist()]
    return {"accuracy": _mean_se(right.mean(1)),
            "says_A": _mean_se(says_a.mean(1)),
            "consistent": _mean_se((right[:, 0] == right[:, 1]).double()),
            "accuracy_swapped": _mean_se((margins[:, 0] - margins[:, 1] > 0).double()),
            "kappa": (cohen_kappa(letters, ["A", "B"] * len(margins)), float("nan"))}
