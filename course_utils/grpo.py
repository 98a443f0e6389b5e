"""GRPO (group relative policy optimization, 组相对策略优化) from scratch: each piece its own function, then a loop.

Shapes: N = prompts x group_size completions, C = completion length (padded), G = group_size.

    adv = group_advantages(rewards, group_size=8)                        # (N,)
    loss = grpo_loss(logps, old_logps, ref_logps, adv, completion_mask)  # scalar, same value as trl's GRPOTrainer

References: Shao et al. 2024 (DeepSeekMath, GRPO); DeepSeek-AI 2025 (DeepSeek-R1, R1-Zero);
Liu et al. 2025 (Understanding R1-Zero-Like Training: Dr. GRPO); Schulman 2020 (k3 KL estimator).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .data import Task, check_answer, final_answer
from .rewards import REWARD_FUNCS, digits_reward, score_completions

TRL_STD_EPS = 1e-4  # trl adds this to the group std before dividing


# ---- the pieces -----------------------------------------------------------------------------------

def _check_tensor(name: str, x, dims: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None and x.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims, got shape {tuple(x.shape)}")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = TRL_STD_EPS) -> torch.Tensor:
    """Advantage of each completion relative to its group: (r - mean_g) / (std_g + eps); rewards (N,) -> (N,).

    Groups are `group_size` consecutive entries (prompt 0's completions first). std is the unbiased (N-1) std and
    eps = 1e-4, both as in trl. scale=False only subtracts the mean (Dr. GRPO). All-equal groups give 0, never NaN.
    """
    _check_tensor("rewards", rewards, 1)
    if not rewards.is_floating_point():
        raise TypeError(f"rewards must be a floating tensor, got dtype {rewards.dtype}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group of one has no baseline), got {group_size!r}")
    if rewards.numel() == 0:
        raise ValueError("rewards must not be empty (one reward per completion)")
    if rewards.numel() % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of rewards, got {rewards.numel()} rewards")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite (got NaN or inf)")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    adv = grouped - grouped.mean(dim=1, keepdim=True)  # (N/G, G)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)  # unbiased std, (N/G, 1)
    return adv.reshape(-1)  # (N,)


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float = 0.2, clip_eps_high: float | None = None) -> torch.Tensor:
    """PPO's clipped objective, negated as a loss, per token: -min(ρ·A, clip(ρ, 1-ε, 1+ε_high)·A), ρ = exp(logp - old).

    logps, old_logps (N, C); advantages (N,) or (N, C) -> (N, C).
    """
    ratio = torch.exp(logps - old_logps)  # (N, C)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (N, 1) or (N, C)
    return -torch.min(ratio * adv, clipped * adv)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): exp(r - l) - (r - l) - 1 with l = log π, r = log π_ref; >= 0. (N, C)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def _agg_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int) -> torch.Tensor:
    """Mean over each sequence's tokens, then over sequences (GRPO paper; biased towards long wrong answers)."""
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _agg_bnpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int) -> torch.Tensor:
    """Sum over all tokens in the batch / number of tokens in the batch."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _agg_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int) -> torch.Tensor:
    """Sum over all tokens / (N · max_completion_length): a constant, so no length-dependent weight (Dr. GRPO)."""
    return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)


# How per-token losses (N, C) become one number; one signature, chosen by loss_type.
LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "grpo": _agg_grpo, "bnpo": _agg_bnpo, "dr_grpo": _agg_dr_grpo,
}


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, completion_mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04,
              loss_type: str = "grpo", *, max_completion_length: int | None = None, clip_eps_high: float | None = None,
              return_stats: bool = False):
    """The GRPO loss, same value as trl's GRPOTrainer (token-level ratio): aggregate(clipped_surrogate + β·k3_kl).

    logps, old_logps, ref_logps, completion_mask: (N, C); advantages (N,). old_logps None = logps.detach()
    (one optimization step per batch); ref_logps may be None only when beta == 0.
    max_completion_length: the "dr_grpo" constant (default C). return_stats: also a dict of floats (kl, clip_frac, ...).
    """
    _check_tensor("logps", logps, 2)
    _check_tensor("completion_mask", completion_mask, 2)
    _check_tensor("advantages", advantages)
    if completion_mask.shape != logps.shape:
        raise ValueError(f"completion_mask must have the shape of logps {tuple(logps.shape)}, got {tuple(completion_mask.shape)}")
    for name, t in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if t is not None:
            _check_tensor(name, t)
            if t.shape != logps.shape:
                raise ValueError(f"{name} must have the shape of logps {tuple(logps.shape)}, got {tuple(t.shape)}")
    if advantages.shape not in (logps.shape[:1], logps.shape):
        raise ValueError(f"advantages must be (N,) = ({logps.shape[0]},) or {tuple(logps.shape)}, got {tuple(advantages.shape)}")
    if not (isinstance(clip_eps, (int, float)) and clip_eps > 0):
        raise ValueError(f"clip_eps must be a number > 0, got {clip_eps!r}")
    if clip_eps_high is not None and not (isinstance(clip_eps_high, (int, float)) and clip_eps_high > 0):
        raise ValueError(f"clip_eps_high must be None or a number > 0, got {clip_eps_high!r}")
    if not (isinstance(beta, (int, float)) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if beta > 0 and ref_logps is None:
        raise ValueError(f"ref_logps is required when beta > 0 (got beta={beta}); pass beta=0.0 to drop the KL term")
    if loss_type not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_type must be one of {list(LOSS_AGGREGATIONS)}, got {loss_type!r}")
    C = logps.shape[1]
    L = C if max_completion_length is None else max_completion_length
    if not isinstance(L, int) or L < C:
        raise ValueError(f"max_completion_length must be an int >= the completion length {C}, got {max_completion_length!r}")

    mask = completion_mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    per_token = clipped_surrogate(logps, old, advantages, clip_eps, clip_eps_high)  # (N, C)
    kl = k3_kl(logps, ref_logps) if beta > 0 else None
    if kl is not None:
        per_token = per_token + beta * kl
    loss = LOSS_AGGREGATIONS[loss_type](per_token, mask, L)
    if not return_stats:
        return loss
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1.0)
        ratio = torch.exp(logps - old)
        adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        high = clip_eps if clip_eps_high is None else clip_eps_high
        clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        stats = {"kl": float((kl * mask).sum() / n_tok) if kl is not None else 0.0,
                 "clip_frac": float((clipped.to(mask.dtype) * mask).sum() / n_tok),
                 "ratio_mean": float((ratio * mask).sum() / n_tok)}
    return loss, stats


def token_gradient_weights(lengths: Sequence[int], advantages: Sequence[float], loss_type: str,
                           max_completion_length: int | None = None) -> torch.Tensor:
    """d loss / d logp for every token at ρ = 1, β = 0 (by autograd through grpo_loss): (N, max(lengths)), 0 on padding.

    Shows the length bias: under "grpo" a token of a long completion gets weight -A/(G·|o|), so long wrong answers
    are penalized less per token than short ones; "dr_grpo" gives every token -A/(G·L).
    """
    if len(lengths) != len(advantages) or not lengths or min(lengths) < 1:
        raise ValueError(f"lengths (all >= 1) and advantages must be non-empty and equally long, got {lengths!r}, {advantages!r}")
    C = max(lengths)
    mask = (torch.arange(C)[None, :] < torch.tensor(lengths)[:, None]).double()  # (N, C)
    logps = torch.zeros(len(lengths), C, dtype=torch.float64, requires_grad=True)
    loss = grpo_loss(logps, None, None, torch.tensor(advantages, dtype=torch.float64), mask, beta=0.0,
                     loss_type=loss_type, max_completion_length=max_completion_length)
    (grad,) = torch.autograd.grad(loss, logps)
    return grad


# ---- log-probs and sampling -------------------------------------------------------------------------

def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int, *,
                        temperature: float = 1.0, with_entropy: bool = False):
    """Log-prob of each of the last `n_completion` tokens under `model`: (N, C) [and entropy (N, C), nats].

    input_ids, attention_mask (N, P + C), prompts left-padded. Naive equivalent:
    log_softmax(model(input_ids).logits[:, -C-1:-1] / T).gather(-1, input_ids[:, -C:, None]).
    """
    _check_tensor("input_ids", input_ids, 2)
    if not isinstance(n_completion, int) or not 1 <= n_completion < input_ids.shape[1]:
        raise ValueError(f"n_completion must be an int in [1, {input_ids.shape[1] - 1}], got {n_completion!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    # logits_to_keep=C+1 computes the LM head only where it is needed; the last position predicts nothing we score.
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n_completion + 1).logits
    logits = logits[:, :-1].float() / temperature  # (N, C, V): position t predicts token t+1
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, C, V)
    logps = logp_all.gather(-1, input_ids[:, -n_completion:].unsqueeze(-1)).squeeze(-1)  # (N, C)
    if not with_entropy:
        return logps
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N, C)
    return logps, entropy


@dataclass
class Rollout:
    """Sampled completions: prompt ids (left-padded) + completion ids (right-padded), their masks and texts."""

    prompt_ids: torch.Tensor  # (N, P)
    prompt_mask: torch.Tensor  # (N, P) 1 = real token
    completion_ids: torch.Tensor  # (N, C) pad after the stop token
    completion_mask: torch.Tensor  # (N, C) 1 up to and including the stop token (as trl)
    texts: list[str]  # decoded completions, special tokens skipped
    stopped: torch.Tensor  # (N,) bool, ended with a stop token within max_new_tokens

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, P + C)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # (N, P + C)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)  # (N,)


def chat_prompt(tokenizer, prompt: str) -> str:
    """The user turn rendered with the chat template, ending where the assistant's reply starts."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def _stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], group_size: int = 1, max_new_tokens: int = 40, *,
                       temperature: float = 1.0, generator: torch.Generator | None = None) -> Rollout:
    """`group_size` completions per prompt (consecutive rows), sampled with a KV cache; temperature 0 = greedy.

    Stops a row at <|im_end|> / EOS; randomness only from `generator`.
    """
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([chat_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    finally:
        tokenizer.padding_side = old_side
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, 0).to(dev)  # (N, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, 0).to(dev)  # (N, P)
    N = prompt_ids.shape[0]
    stop = torch.tensor(_stop_ids(tokenizer), device=dev)
    pad = tokenizer.pad_token_id
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1)
    cache, mask = out.past_key_values, prompt_mask
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    new_ids, new_mask = [], []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()  # (N, V)
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(dev)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        new_mask.append((~done).long())
        new_ids.append(tok)
        done = done | torch.isin(tok, stop)
        if done.all():
            break
        mask = torch.cat([mask, torch.ones(N, 1, dtype=mask.dtype, device=dev)], dim=1)  # (N, P + t + 1)
        out = model(input_ids=tok[:, None], attention_mask=mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    model.train(was_training)
    completion_ids = torch.stack(new_ids, 1)  # (N, C)
    completion_mask = torch.stack(new_mask, 1)  # (N, C)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, done.cpu())


# ---- evaluation and test-time compute ---------------------------------------------------------------

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
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
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


# ---- the training loop ------------------------------------------------------------------------------

@dataclass
class GRPOConfig:
    """Settings for train_grpo (names follow trl's GRPOConfig where there is one)."""

    steps: int = 30  # generation rounds; each samples a fresh batch then takes num_iterations optimizer steps
    prompts_per_step: int = 8  # distinct prompts per round
    group_size: int = 8  # completions per prompt (trl: num_generations)
    max_new_tokens: int = 40  # completion budget (trl: max_completion_length)
    temperature: float = 1.0  # sampling temperature for rollouts
    lr: float = 5e-5  # constant AdamW learning rate (3e-4 made held-out accuracy fall on course-tiny-sft)
    num_iterations: int = 2  # optimizer steps per sampled batch (μ); from the 2nd on the ratio differs from 1
    clip_eps: float = 0.2  # PPO clip range ε (trl: epsilon)
    beta: float = 0.04  # weight of the k3 KL to the reference model (0 = no reference model needed)
    loss_type: str = "grpo"  # "grpo" | "bnpo" | "dr_grpo"
    scale_rewards: bool = True  # divide by the group std (False = Dr. GRPO)
    grad_clip: float | None = 1.0  # max global grad norm
    eval_every: int = 10  # greedy held-out accuracy every N rounds (0 = never)
    save_every: int = 0  # checkpoint every N rounds (needs checkpoint_dir)
    seed: int = 0  # prompt order and sampling
    max_seconds: float | None = None  # stop after the round that passes this wall time (None = run all steps)


@dataclass
class GRPOResult:
    """Per-round logs (one dict per round; rounds with an evaluation carry 'eval_acc') and wall time."""

    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) for one logged metric, skipping rounds where it was not logged."""
        rows = [h for h in self.history if key in h]
        return [h["step"] for h in rows], [h[key] for h in rows]


def _check_config(cfg: GRPOConfig) -> None:
    if not isinstance(cfg, GRPOConfig):
        raise TypeError(f"cfg must be a GRPOConfig, got {type(cfg).__name__}")
    for name in ("steps", "prompts_per_step", "max_new_tokens", "num_iterations"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"cfg.{name} must be a positive int, got {v!r}")
    if not isinstance(cfg.group_size, int) or cfg.group_size < 2:
        raise ValueError(f"cfg.group_size must be an int >= 2, got {cfg.group_size!r}")
    if not cfg.lr > 0 or not cfg.temperature > 0:
        raise ValueError(f"cfg.lr and cfg.temperature must be > 0, got {cfg.lr!r}, {cfg.temperature!r}")
    if cfg.loss_type not in LOSS_AGGREGATIONS:
        raise ValueError(f"cfg.loss_type must be one of {list(LOSS_AGGREGATIONS)}, got {cfg.loss_type!r}")


def train_grpo(model, tokenizer, tasks: Sequence[Task], cfg: GRPOConfig, *, ref_model=None,
               eval_tasks: Sequence[Task] | None = None, reward_funcs: dict | None = None,
               checkpoint_dir: str | Path | None = None, resume: bool = False, stop_at_step: int | None = None,
               log_every: int = 0, callback: Callable[[dict], None] | None = None) -> GRPOResult:
    """GRPO on `tasks` (training prompts): sample G completions per prompt, score, group advantages, μ clipped steps.

    ref_model: frozen reference for the KL term (default: a copy of `model` at the start; unused when beta == 0).
    Checkpoints (train.save_checkpoint: model, optimizer, RNG, history) go to checkpoint_dir/step_NNNNNN;
    resume=True continues from the latest one. Prompts and samples are seeded by (cfg.seed, round), so a resumed
    run draws the same batches as an uninterrupted one.
    """
    from .train import latest_checkpoint, load_checkpoint, save_checkpoint

    _check_config(cfg)
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError("tasks must be a non-empty list of data.Task")
    if (cfg.save_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_dir must be set to save checkpoints or resume")
    if stop_at_step is not None and not (isinstance(stop_at_step, int) and 1 <= stop_at_step <= cfg.steps):
        raise ValueError(f"stop_at_step must be None or an int in [1, {cfg.steps}], got {stop_at_step!r}")
    funcs = REWARD_FUNCS if reward_funcs is None else reward_funcs
    if cfg.beta > 0 and ref_model is None:
        ref_model = copy.deepcopy(model)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)  # trl's defaults
    result, start = GRPOResult(), 0
    ckpt = latest_checkpoint(checkpoint_dir) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt)
        start, result.history, result.resumed_from = state["step"], state["metrics"], state["step"]
    G, P = cfg.group_size, cfg.prompts_per_step
    end = stop_at_step or cfg.steps
    t0 = time.time()
    if eval_tasks and cfg.eval_every and start == 0:  # the starting point, before any update
        ev = evaluate_policy(model, tokenizer, eval_tasks, max_new_tokens=cfg.max_new_tokens)
        result.history.append({"step": 0, "eval_acc": ev["greedy"], "eval_digits": ev["digits"]})
    for step in range(start, end):
        t_round = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = [tasks[i] for i in torch.randint(len(tasks), (P,), generator=gen).tolist()]
        ro = sample_completions(model, tokenizer, [t.prompt for t in batch], G, cfg.max_new_tokens,
                                temperature=cfg.temperature, generator=gen)
        group_tasks = [t for t in batch for _ in range(G)]
        rewards = score_completions(ro.texts, group_tasks, funcs)  # {name: (N,)}
        total = torch.stack(list(rewards.values())).sum(0)  # (N,)
        dev = ro.completion_ids.device
        adv = group_advantages(total, G, scale=cfg.scale_rewards).to(dev)  # (N,)
        ids, am, C = ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1]
        with torch.no_grad():
            old = completion_logprobs(model, ids, am, C, temperature=cfg.temperature) if cfg.num_iterations > 1 else None
            ref = completion_logprobs(ref_model, ids, am, C, temperature=cfg.temperature) if cfg.beta > 0 else None
        model.train()
        for _ in range(cfg.num_iterations):
            logps, ent = completion_logprobs(model, ids, am, C, temperature=cfg.temperature, with_entropy=True)
            loss, stats = grpo_loss(logps, old, ref, adv, ro.completion_mask, cfg.clip_eps, cfg.beta, cfg.loss_type,
                                    max_completion_length=cfg.max_new_tokens, return_stats=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        model.eval()
        m = ro.completion_mask.float()
        row = {"step": step + 1, "loss": float(loss.detach()), "reward": float(total.mean()),
               **{f"reward_{k}": float(v.mean()) for k, v in rewards.items()},
               "reward_std": float(total.view(-1, G).std(1).mean()),
               "zero_std_frac": float((total.view(-1, G).std(1) == 0).float().mean()),
               "length": float(ro.lengths.float().mean()),
               "entropy": float((ent.detach() * m).sum() / m.sum()), **stats,
               "seconds": time.time() - t_round}
        out_of_time = cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds
        if eval_tasks and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == end or out_of_time):
            ev = evaluate_policy(model, tokenizer, eval_tasks, max_new_tokens=cfg.max_new_tokens)
            row["eval_acc"], row["eval_digits"] = ev["greedy"], ev["digits"]
        result.history.append(row)
        if log_every and ((step + 1) % log_every == 0 or step + 1 == end):
            shown = "".join(f"  {k} {row[k]:.3f}" for k in ("reward", "reward_accuracy", "kl", "length", "eval_acc", "eval_digits")
                            if k in row)
            print(f"round {step + 1:4d}{shown}", flush=True)
        if callback is not None:
            callback(row)
        if cfg.save_every and ((step + 1) % cfg.save_every == 0 or step + 1 == end or out_of_time):
            save_checkpoint(Path(checkpoint_dir) / f"step_{step + 1:06d}", model, opt, step + 1,
                            losses=[h["loss"] for h in result.history if "loss" in h], metrics=result.history)
        if out_of_time:
            break
    result.seconds = time.time() - t0
    return result


def gpu_plan(model_id: str = "Qwen/Qwen3-0.6B", *, prompts_per_step: int = 8, group_size: int = 8,
             prompt_len: int = 256, completion_len: int = 512, micro_batch: int = 8, gpu_tflops: float = 990.0, mfu: float = 0.3,
             gpu_bandwidth_gbs: float = 3350.0, decode_overhead_ms: float = 20.0) -> dict:
    """Predicted memory (GiB) and seconds per round for GRPO on a hub model (full fine-tuning, bf16, no vLLM).

    Memory: policy training on micro-batches of `micro_batch` sequences (course_utils.memory) + a bf16 reference copy + the KV cache of all N sampled sequences.
    Time: training ≈ 6·params·tokens / (tflops·mfu) (+2·params·tokens for old/ref log-probs); decoding is
    memory-bound: completion_len steps × (weights read once + a fixed per-step Python/kernel overhead).
    """
    from .attention import kv_cache_bytes
    from .memory import KNOWN_MODELS, count_params, estimate_training_memory

    if model_id not in KNOWN_MODELS:
        raise ValueError(f"model_id must be one of {list(KNOWN_MODELS)}, got {model_id!r}")
    for name, v in (("prompts_per_step", prompts_per_step), ("group_size", group_size), ("prompt_len", prompt_len),
                    ("completion_len", completion_len), ("micro_batch", micro_batch)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    arch = KNOWN_MODELS[model_id]
    N, T = prompts_per_step * group_size, prompt_len + completion_len
    train = estimate_training_memory(model_id, "full", batch_size=micro_batch, seq_len=T, dtype="bf16", grad_checkpointing=True)
    n_params = train.n_params
    ref_bytes = 2 * n_params
    kv = kv_cache_bytes(arch["num_hidden_layers"], arch["num_key_value_heads"], arch["head_dim"], T, N)
    tokens = N * T
    train_s = (6 + 2 + 2) * n_params * tokens / (gpu_tflops * 1e12 * mfu)
    decode_s = completion_len * (2 * n_params / (gpu_bandwidth_gbs * 1e9) + decode_overhead_ms / 1e3)
    gib = 2**30
    return {"model": model_id, "params_M": n_params / 1e6, "completions_per_round": N, "tokens_per_round": tokens,
            "train_GiB": (train.peak or train.total) / gib, "reference_GiB": ref_bytes / gib, "kv_cache_GiB": kv / gib,
            "total_GiB": ((train.peak or train.total) + ref_bytes + kv) / gib,
            "train_s": train_s, "generate_s": decode_s, "round_s": train_s + decode_s}


def config_dict(cfg: GRPOConfig) -> dict:
    """The config as a plain dict (for printing next to results)."""
    return asdict(cfg)
