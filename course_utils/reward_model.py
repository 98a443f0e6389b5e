"""The reward model (奖励模型) of classic RLHF: a language model with a scalar head, trained on preference pairs with the
Bradley–Terry loss; its held-out pair accuracy and calibration.

    rm = load_reward_model("course-tiny-sft")                       # transformers' ...ForSequenceClassification, 1 label
    r = reward_scores(rm, input_ids, attention_mask)                # (N,) the head on the last non-pad token
    loss = bradley_terry_loss(r_chosen, r_rejected).mean()          # = trl's RewardTrainer loss

In lab 10 the comparisons are rule-made (a right reply over a corrupted one, dpo.pairs.make_preference_pairs) or
sampled from the policy (dpo.pairs.sampled_pairs), with a controlled fraction of the labels flipped (label noise) --
the stand-in for human labellers who disagree.
References: Bradley & Terry 1952; Ouyang et al. 2022 (InstructGPT, the reward model of RLHF); Stiennon et al. 2020;
Gao et al. 2022 (scaling laws for reward model over-optimization; the best-of-n estimator).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .checks import check_int, check_items, check_number, check_tensor
from .dpo.pairs import PreferencePair, collate_pairs, make_pair_batch_fn, tokenize_pairs


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Per-pair loss -log σ(r_c - r_r - margin): (B,) from (B,) rewards. Its mean is trl RewardTrainer's loss.

    P(chosen preferred) = σ(r_c - r_r) under the Bradley–Terry model; a margin (B,) or scalar asks for a larger gap
    on pairs labelled as more clearly preferred (Llama 2's margin loss).
    """
    check_tensor("chosen_rewards", chosen_rewards, dims=1, floating=True)
    check_tensor("rejected_rewards", rejected_rewards, dims=1, floating=True)
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen_rewards and rejected_rewards must have the same shape (B,), got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    diff = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def load_reward_model(name: str = "course-tiny-sft", *, device=None, seed: int = 0):
    """(reward model, tokenizer): a causal LM checkpoint with a fresh scalar head (seeded) -- transformers'
    AutoModelForSequenceClassification with num_labels=1, as trl's RewardTrainer builds it -- or a reward model
    saved with save_pretrained (its head included).

    name: "course-tiny", a folder under data/ such as "course-tiny-sft", or a local model folder.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .labs.common import resolve_model
    from .models import _resolve

    source, causal = _resolve(resolve_model(name))
    config = Path(source, "config.json")
    architectures = json.loads(config.read_text()).get("architectures") or [] if config.exists() else []
    saved_rm = any(a.endswith("ForSequenceClassification") for a in architectures)
    if not (causal or saved_rm):
        raise ValueError(f"name must name a causal language model (the reward model's trunk) or a saved reward model, "
                         f"got {name!r}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the new head as missing: expected
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the new head's initialisation, without touching the caller's RNG
            rm = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    rm.config.pad_token_id = tokenizer.pad_token_id
    return rm.to(device or "cpu").eval(), tokenizer


def reward_scores(reward_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar reward per sequence: (N,) from input_ids (N, T), read at the last non-pad token (either padding side).

    Naive equivalent: reward_model.score(hidden_states[i, last_real_token_i]).
    """
    check_tensor("input_ids", input_ids, dims=2)
    return reward_model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()  # (N,)


def with_label_noise(pairs: Sequence[PreferencePair], noise: float, seed: int = 0) -> list[PreferencePair]:
    """The pairs with chosen and rejected swapped in a random fraction `noise` of them (labellers' disagreement)."""
    check_items("pairs", pairs, PreferencePair, "PreferencePair")
    check_number("noise", noise, 0, 0.5, allowed="a fraction in [0, 0.5]")
    rng = random.Random(seed)
    return [replace(p, chosen=p.rejected, rejected=p.chosen) if rng.random() < noise else p for p in pairs]


def pair_margins(reward_model, tokenizer, pairs: Sequence[PreferencePair], batch_size: int = 64) -> torch.Tensor:
    """r(chosen) - r(rejected) for every pair: (B,), no gradient. > 0 means the model agrees with the label."""
    check_items("pairs", pairs, PreferencePair, "PreferencePair")
    was_training = reward_model.training
    reward_model.eval()
    dev = next(reward_model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            batch = collate_pairs(tokenize_pairs(tokenizer, list(pairs[i:i + batch_size])), tokenizer.pad_token_id)
            r = reward_scores(reward_model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev))  # (2B,)
            chosen, rejected = r.chunk(2)
            out.append((chosen - rejected).cpu())
    reward_model.train(was_training)
    return torch.cat(out)


@dataclass
class RewardConfig:
    """Settings for train_reward_model (names follow trl's RewardConfig where there is one)."""

    epochs: float = 2.0  # passes over the pairs
    batch_size: int = 16  # pairs per step (2 x batch_size sequences)
    lr: float = 5e-5  # AdamW, linear decay to 0
    margin: float | None = None  # constant margin in the Bradley–Terry loss (None = none)
    center_rewards_coefficient: float | None = 0.01  # trl's: + c * mean((r_c + r_r)^2) keeps rewards near 0
    grad_clip: float | None = 1.0
    seed: int = 0


@dataclass
class RewardResult:
    history: list[dict] = field(default_factory=list)  # per step: loss, accuracy (on the batch), margin
    seconds: float = 0.0


def train_reward_model(reward_model, tokenizer, pairs: Sequence[PreferencePair], cfg: RewardConfig | None = None,
                       *, log_every: int = 0) -> RewardResult:
    """Bradley–Terry training of `reward_model` on `pairs` (chosen preferred); the loss trl's RewardTrainer uses."""
    cfg = cfg or RewardConfig()
    check_items("pairs", pairs, PreferencePair, "PreferencePair")
    check_number("cfg.epochs", cfg.epochs, 0, low_open=True)
    check_int("cfg.batch_size", cfg.batch_size)
    check_number("cfg.lr", cfg.lr, 0, low_open=True)
    steps = max(1, round(cfg.epochs * len(pairs) / cfg.batch_size))
    batches = make_pair_batch_fn(tokenize_pairs(tokenizer, list(pairs)), min(cfg.batch_size, len(pairs)),
                                 tokenizer.pad_token_id, seed=cfg.seed)
    params = [p for p in reward_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    dev = next(reward_model.parameters()).device
    result, t0 = RewardResult(), time.time()
    reward_model.train()
    for step in range(steps):
        batch = batches(step)
        r = reward_scores(reward_model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev))  # (2B,)
        chosen, rejected = r.chunk(2)
        loss = bradley_terry_loss(chosen, rejected, cfg.margin).mean()
        if cfg.center_rewards_coefficient:
            loss = loss + cfg.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "accuracy": float((chosen > rejected).float().mean()),
               "margin": float((chosen - rejected).mean().detach())}
        result.history.append(row)
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            print(f"step {step + 1:4d}  loss {row['loss']:.3f}  batch accuracy {row['accuracy']:.2f}", flush=True)
    reward_model.eval()
    result.seconds = time.time() - t0
    return result


def calibration(margins: torch.Tensor, n_bins: int = 5) -> list[dict]:
    """Reliability table of the Bradley–Terry probability p = σ(margin) that the labelled-chosen reply wins.

    margins (B,) on held-out pairs with true labels. Bins of equal count by |margin|; per bin: mean predicted
    confidence max(p, 1-p), observed accuracy (margin > 0) and its standard error, n. Calibrated: confidence ≈ accuracy.
    """
    check_tensor("margins", margins, dims=1, floating=True)
    check_int("n_bins", n_bins, 1, len(margins), allowed=f"an int in [1, {len(margins)}] (one pair per bin at least)")
    order = margins.abs().argsort()
    rows = []
    for idx in order.tensor_split(n_bins):
        m = margins[idx]
        acc = float((m > 0).float().mean())
        rows.append({"confidence": float(torch.sigmoid(m.abs()).mean()), "accuracy": acc,
                     "se": (acc * (1 - acc) / len(m)) ** 0.5, "n": len(m)})
    return rows


def best_of_n_curve(proxy: torch.Tensor, true: torch.Tensor, ns: Sequence[int]) -> list[dict]:
    """Best-of-n by the proxy reward, exactly averaged over every n-subset of the N samples of each prompt.

    proxy, true (P, N): proxy reward and true reward of N samples for P prompts. For each n: the mean over prompts
    of E[true reward of the proxy-best of n random samples] (Gao et al. 2022's unbiased estimator: the sample of proxy
    rank i, counted from the bottom, is the best of a random n-subset with probability C(i-1, n-1) / C(N, n)), its SE over
    prompts, the same for the proxy reward, each one's change from a single sample (n = 1) with its paired SE over
    prompts ("true_gain", "true_gain_se", ...), and the best-of-n KL bound log n - (n-1)/n (nats).
    Ties in the proxy are broken by sample order.
    """
    check_tensor("proxy", proxy, dims=2, floating=True)
    check_tensor("true", true, dims=2)
    if proxy.shape != true.shape:
        raise ValueError(f"proxy and true must have the same shape (P, N), got {tuple(proxy.shape)} and {tuple(true.shape)}")
    P, N = proxy.shape
    for n in ns:
        check_int("ns[i]", n, 1, N, allowed=f"an int in [1, {N}] (samples per prompt)")
    order = proxy.double().argsort(dim=1, stable=True)  # (P, N) ascending proxy
    sorted_true = true.double().gather(1, order)  # (P, N)
    sorted_proxy = proxy.double().gather(1, order)  # (P, N)
    rank = torch.arange(1, N + 1, dtype=torch.float64)  # (N,) rank i from the bottom
    rows = []
    for n in ns:
        log_w = torch.lgamma(rank) - torch.lgamma(rank - n + 1) if n > 1 else torch.zeros(N, dtype=torch.float64)
        w = torch.where(rank >= n, log_w, torch.full_like(log_w, -float("inf")))
        w = torch.softmax(w, dim=0)  # (N,) C(i-1, n-1) / C(N, n), normalised
        row = {"n": n, "kl": math.log(n) - (n - 1) / n}
        for key, values in (("true", sorted_true), ("proxy", sorted_proxy)):
            per_prompt = values @ w  # (P,)
            gain = per_prompt - values.mean(1)  # (P,) against one random sample of the same prompt
            row[key], row[f"{key}_gain"] = float(per_prompt.mean()), float(gain.mean())
            row[f"{key}_se"] = float(per_prompt.std() / P ** 0.5) if P > 1 else 0.0
            row[f"{key}_gain_se"] = float(gain.std() / P ** 0.5) if P > 1 else 0.0
        rows.append(row)
    return rows

