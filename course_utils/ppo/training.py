"""The RLHF loop: sample from the policy, score with the reward model (the proxy) and the verifier (the true reward,
logged), then PPO (critic + GAE, KL folded into the reward) or RLOO (leave-one-out baseline, no critic) steps;
with checkpoints and resume. Also the four models' memory, predicted."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..checks import check_choice, check_int, check_items, check_number
from ..data import Task, check_answer
from ..grpo import GRPOResult, completion_logprobs, evaluate_policy, sample_completions
from ..reward_model import reward_scores
from .losses import (explained_variance, gae, kl_penalized_rewards, masked_mean, policy_loss, rloo_advantages,
                     rloo_loss, value_loss, whiten)

ALGORITHMS = ("ppo", "rloo")
REWARDS = ("model", "verifier")


@dataclass
class PPOConfig:
    """Settings for train_rlhf (names follow trl's PPO/RLOO configs where there is one)."""

    algorithm: str = "ppo"  # "ppo" (critic + GAE) | "rloo" (leave-one-out baseline, no critic)
    reward: str = "model"  # "model" = the learned reward model (proxy) | "verifier" = the true reward, as lab 09
    steps: int = 60  # rounds: sample a batch, then num_epochs optimizer steps on it
    prompts_per_step: int = 16  # distinct prompts per round
    group_size: int = 2  # samples per prompt (RLOO needs >= 2; PPO does not group)
    max_new_tokens: int = 40  # completion budget
    temperature: float = 1.0  # sampling temperature
    lr: float = 5e-5  # policy AdamW learning rate
    critic_lr: float = 1e-4  # critic AdamW learning rate (PPO)
    num_epochs: int = 2  # optimizer steps per sampled batch (trl: num_ppo_epochs)
    clip_eps: float = 0.2  # policy ratio clip ε (trl: cliprange)
    clip_value: float | None = 0.2  # critic clip (trl: cliprange_value; None = unclipped)
    vf_coef: float = 0.1  # weight of the value loss (trl's default)
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE λ
    kl_coef: float = 0.05  # KL penalty folded into the reward (trl: kl_coef for PPO, beta for RLOO)
    entropy_coef: float = 0.0  # entropy bonus
    whiten_advantages: bool = True  # PPO: normalize advantages over the batch's tokens
    grad_clip: float | None = 1.0  # max grad norm, per model
    eval_every: int = 10  # greedy held-out accuracy every N rounds (0 = never)
    save_every: int = 0  # checkpoint every N rounds (needs checkpoint_dir)
    seed: int = 0  # prompt order and sampling
    max_seconds: float | None = None  # stop after the round that passes this wall time


class RLHFResult(GRPOResult):
    """Per-round logs of train_rlhf (rounds with an evaluation carry 'eval_acc'), wall time, the round resumed from."""


def check_config(cfg: PPOConfig) -> None:
    if not isinstance(cfg, PPOConfig):
        raise TypeError(f"cfg must be a PPOConfig, got {type(cfg).__name__}")
    check_choice("cfg.algorithm", cfg.algorithm, ALGORITHMS)
    check_choice("cfg.reward", cfg.reward, REWARDS)
    for name in ("steps", "prompts_per_step", "max_new_tokens", "num_epochs"):
        check_int(f"cfg.{name}", getattr(cfg, name))
    check_int("cfg.group_size", cfg.group_size, 2 if cfg.algorithm == "rloo" else 1,
              allowed="an int >= 2 for RLOO (it needs other samples of the prompt)" if cfg.algorithm == "rloo" else None)
    for name in ("lr", "critic_lr", "temperature", "clip_eps"):
        check_number(f"cfg.{name}", getattr(cfg, name), 0, low_open=True)
    check_number("cfg.kl_coef", cfg.kl_coef, 0)
    check_number("cfg.gamma", cfg.gamma, 0, 1)
    check_number("cfg.lam", cfg.lam, 0, 1)


def token_values(critic, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int) -> torch.Tensor:
    """The critic's value before each of the last `n_completion` tokens: (N, C).

    critic: a ...ForSequenceClassification model with one label; its head read at every position, not only the last
    (trl's PPO value model). Position t's value sits where the policy predicts token t (as completion_logprobs).
    """
    backbone = getattr(critic, critic.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, P + C, d)
    return critic.score(hidden[:, -n_completion - 1:-1]).squeeze(-1).float()  # (N, C)


def train_rlhf(policy, tokenizer, tasks: Sequence[Task], reward_model, cfg: PPOConfig, *, critic=None, ref_model=None,
               eval_tasks: Sequence[Task] | None = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
               stop_at_step: int | None = None, log_every: int = 0,
               callback: Callable[[dict], None] | None = None) -> RLHFResult:
    """PPO or RLOO on `tasks` against `reward_model` (or the verifier with cfg.reward="verifier").

    ref_model: the frozen reference of the KL term (default: a copy of `policy` at the start; kept also with
    kl_coef 0 so the KL is logged). critic (PPO): default a copy of `reward_model`, as InstructGPT initialises it.
    Logged per round: proxy (reward model score) and true (verifier accuracy) of the samples, kl (mean per sequence,
    nats, the k1 estimate Σ log π/π_ref), entropy, length, losses. Checkpoints hold policy + critic and the optimizer;
    resume=True continues from the latest; prompts and samples are seeded per round.
    """
    from ..train import latest_checkpoint, load_checkpoint, save_checkpoint

    check_config(cfg)
    check_items("tasks", tasks, Task, "data.Task")
    if (cfg.save_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_dir must be set to save checkpoints or resume")
    if stop_at_step is not None:
        check_int("stop_at_step", stop_at_step, 1, cfg.steps, allowed=f"None or an int in [1, {cfg.steps}]")
    ppo = cfg.algorithm == "ppo"
    ref_model = copy.deepcopy(policy) if ref_model is None else ref_model
    ref_model.eval().requires_grad_(False)
    reward_model.eval().requires_grad_(False)
    if ppo:
        critic = (copy.deepcopy(reward_model) if critic is None else critic).requires_grad_(True)
    trained = torch.nn.ModuleDict({"policy": policy, **({"critic": critic} if ppo else {})})  # one checkpoint
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.lr}]
    if ppo:
        groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": cfg.critic_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    result, start = RLHFResult(), 0
    ckpt = latest_checkpoint(checkpoint_dir) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, trained, opt)
        start, result.history, result.resumed_from = state["step"], state["metrics"], state["step"]
    G, P = cfg.group_size, cfg.prompts_per_step
    end = stop_at_step or cfg.steps
    t0 = time.time()
    if eval_tasks and cfg.eval_every and start == 0:  # the starting point, before any update
        row = {"step": 0, "eval_acc": evaluate_policy(policy, tokenizer, eval_tasks, max_new_tokens=cfg.max_new_tokens)["greedy"]}
        result.history.append(row)
        if callback is not None:
            callback(row)
    for step in range(start, end):
        t_round = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = [tasks[i] for i in torch.randint(len(tasks), (P,), generator=gen).tolist()]
        ro = sample_completions(policy, tokenizer, [t.prompt for t in batch], G, cfg.max_new_tokens,
                                temperature=cfg.temperature, generator=gen)
        dev = ro.completion_ids.device
        true = torch.tensor([float(check_answer(t, text)) for t, text in zip([t for t in batch for _ in range(G)],
                                                                            ro.texts)], device=dev)  # (N,)
        ids, am, C = ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1]
        mask = ro.completion_mask.float()  # (N, C)
        with torch.no_grad():
            proxy = reward_scores(reward_model, ids, am)  # (N,)
            old = completion_logprobs(policy, ids, am, C, temperature=cfg.temperature)  # (N, C)
            ref = completion_logprobs(ref_model, ids, am, C, temperature=cfg.temperature)  # (N, C)
            old_values = token_values(critic, ids, am, C) * mask if ppo else None  # (N, C)
        score = proxy if cfg.reward == "model" else true
        seq_kl = ((old - ref) * mask).sum(1)  # (N,) k1 estimate of KL(π || π_ref) per sequence
        if ppo:
            rewards = kl_penalized_rewards(score, old, ref, mask, cfg.kl_coef)  # (N, C)
            adv, returns = gae(rewards, old_values, cfg.gamma, cfg.lam)  # (N, C) each
            if cfg.whiten_advantages:
                adv = whiten(adv, mask)
        else:
            adv = rloo_advantages(score - cfg.kl_coef * seq_kl, G)  # (N,)
        trained.train()
        for _ in range(cfg.num_epochs):
            logps, ent = completion_logprobs(policy, ids, am, C, temperature=cfg.temperature, with_entropy=True)
            if ppo:
                p_loss, stats = policy_loss(logps, old, adv, mask, cfg.clip_eps, return_stats=True)
                values = token_values(critic, ids, am, C)
                v_loss = value_loss(values, old_values, returns, mask, cfg.clip_value)
                loss = p_loss + cfg.vf_coef * v_loss
            else:
                p_loss, stats = rloo_loss((logps * mask).sum(1), (old * mask).sum(1), adv, cfg.clip_eps, True)
                loss = p_loss
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * masked_mean(ent, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                for g in groups:
                    torch.nn.utils.clip_grad_norm_(g["params"], cfg.grad_clip)
            opt.step()
        trained.eval()
        row = {"step": step + 1, "proxy": float(proxy.mean()), "true": float(true.mean()), "kl": float(seq_kl.mean()),
               "entropy": float(masked_mean(ent.detach(), mask)), "length": float(ro.lengths.float().mean()),
               "truncated_frac": float((~ro.stopped).float().mean()), "policy_loss": float(p_loss.detach()),
               "clip_frac": stats["clip_frac"], "seconds": time.time() - t_round}  # sampling + updates
        if ppo:
            row["value_loss"] = float(v_loss.detach())
            row["explained_variance"] = explained_variance(old_values, returns, mask)
        out_of_time = cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds
        if eval_tasks and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == end or out_of_time):
            row["eval_acc"] = evaluate_policy(policy, tokenizer, eval_tasks, max_new_tokens=cfg.max_new_tokens)["greedy"]
        result.history.append(row)
        if log_every and ((step + 1) % log_every == 0 or step + 1 == end):
            shown = "".join(f"  {k} {row[k]:.3f}" for k in ("proxy", "true", "kl", "eval_acc") if k in row)
            print(f"round {step + 1:4d}{shown}", flush=True)
        if callback is not None:
            callback(row)
        if cfg.save_every and ((step + 1) % cfg.save_every == 0 or step + 1 == end or out_of_time):
            save_checkpoint(Path(checkpoint_dir) / f"step_{step + 1:06d}", trained, opt, step + 1,
                            metrics=result.history)
        if out_of_time:
            break
    result.seconds = time.time() - t0
    return result


def config_dict(cfg: PPOConfig) -> dict:
    """The config as a plain dict (for printing next to results)."""
    return asdict(cfg)


def memory_plan(model_or_id, *, batch_size: int, seq_len: int, dtype: str = "bf16",
                grad_checkpointing: bool = True) -> dict:
    """Predicted bytes of PPO's four models (course_utils.memory, lecture 06): the policy and the critic are trained
    (weights, gradients, AdamW states, activations), the reference and the reward model only held (weights).

    The critic is counted as a copy of the policy (its scalar head replaces the LM head: a little smaller).
    Returns {model role: bytes} and "total".
    """
    from ..memory import estimate_training_memory

    trained = estimate_training_memory(model_or_id, "full", batch_size=batch_size, seq_len=seq_len, dtype=dtype,
                                       grad_checkpointing=grad_checkpointing)
    plan = {"policy (trained)": trained.total, "critic (trained)": trained.total,
            "reference (frozen)": trained.params, "reward model (frozen)": trained.params}
    return {**plan, "total": sum(plan.values())}
