"""The GRPO loop: sample a group per prompt, score it with the reward functions, group advantages, then
num_iterations clipped steps; with checkpoints and resume, and DAPO's options (clip-higher, dynamic sampling, token-level
loss, overlong penalty) and Dr. GRPO's (no std scaling, constant normalizer). Also the GPU plan of one round."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..checks import check_choice, check_int, check_items, check_number
from ..data import Task
from ..rewards import REWARD_FUNCS, score_completions
from .evaluate import evaluate_policy
from .losses import LOSS_AGGREGATIONS, group_advantages, grpo_loss, informative_groups, mask_truncated, overlong_penalty
from .rollout import Rollout, completion_logprobs, concat_rollouts, sample_completions


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
    clip_eps_high: float | None = None  # DAPO's clip-higher upper range, e.g. 0.28 (trl: epsilon_high; None = clip_eps)
    beta: float = 0.04  # weight of the k3 KL to the reference model (0 = no reference model needed)
    loss_type: str = "grpo"  # "grpo" | "bnpo" | "dapo" | "dr_grpo"
    scale_rewards: bool = True  # divide by the group std (False = Dr. GRPO)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, sample more prompts to refill
    max_sampling_draws: int = 3  # with dynamic_sampling: at most this many draws of prompts_per_step prompts a round
    mask_truncated_completions: bool = False  # no loss on replies cut off at max_new_tokens (as trl's option)
    overlong_buffer: int = 0  # DAPO's soft overlong penalty over the last N tokens of the budget (0 = off)
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
    for name in ("steps", "prompts_per_step", "max_new_tokens", "num_iterations", "max_sampling_draws"):
        check_int(f"cfg.{name}", getattr(cfg, name))
    check_int("cfg.overlong_buffer", cfg.overlong_buffer, 0, cfg.max_new_tokens - 1)
    if cfg.clip_eps_high is not None:
        check_number("cfg.clip_eps_high", cfg.clip_eps_high, cfg.clip_eps, allowed=f"None or a number >= cfg.clip_eps = {cfg.clip_eps}")
    check_int("cfg.group_size", cfg.group_size, 2)
    check_number("cfg.lr", cfg.lr, 0, low_open=True)
    check_number("cfg.temperature", cfg.temperature, 0, low_open=True)
    check_choice("cfg.loss_type", cfg.loss_type, list(LOSS_AGGREGATIONS))


def train_grpo(model, tokenizer, tasks: Sequence[Task], cfg: GRPOConfig, *, ref_model=None,
               eval_tasks: Sequence[Task] | None = None, reward_funcs: dict | None = None,
               checkpoint_dir: str | Path | None = None, resume: bool = False, stop_at_step: int | None = None,
               log_every: int = 0, callback: Callable[[dict], None] | None = None) -> GRPOResult:
    """GRPO on `tasks` (training prompts): sample G completions per prompt, score, group advantages, μ clipped steps.

    ref_model: frozen reference for the KL term (default: a copy of `model` at the start when beta > 0); given with
    beta == 0, the KL to it is logged but not penalized.
    Checkpoints (train.save_checkpoint: model, optimizer, RNG, history) go to checkpoint_dir/step_NNNNNN;
    resume=True continues from the latest one. Prompts and samples are seeded by (cfg.seed, round), so a resumed
    run draws the same batches as an uninterrupted one.
    """
    from ..train import latest_checkpoint, load_checkpoint, save_checkpoint

    _check_config(cfg)
    check_items("tasks", tasks, Task, "data.Task")
    if (cfg.save_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_dir must be set to save checkpoints or resume")
    if stop_at_step is not None:
        check_int("stop_at_step", stop_at_step, 1, cfg.steps, allowed=f"None or an int in [1, {cfg.steps}]")
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
        ro, rewards, sampled = _sample_round(model, tokenizer, tasks, cfg, funcs, gen)
        total = torch.stack(list(rewards.values())).sum(0)  # (N,)
        dev = ro.completion_ids.device
        adv = group_advantages(total, G, scale=cfg.scale_rewards).to(dev)  # (N,)
        ids, am, C = ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1]
        loss_mask = mask_truncated(ro.completion_mask, ro.stopped) if cfg.mask_truncated_completions else ro.completion_mask
        with torch.no_grad():
            old = completion_logprobs(model, ids, am, C, temperature=cfg.temperature) if cfg.num_iterations > 1 else None
            ref = completion_logprobs(ref_model, ids, am, C, temperature=cfg.temperature) if ref_model is not None else None
        model.train()
        for _ in range(cfg.num_iterations):
            logps, ent = completion_logprobs(model, ids, am, C, temperature=cfg.temperature, with_entropy=True)
            loss, stats = grpo_loss(logps, old, ref, adv, loss_mask, cfg.clip_eps, cfg.beta, cfg.loss_type,
                                    max_completion_length=cfg.max_new_tokens, clip_eps_high=cfg.clip_eps_high,
                                    return_stats=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        model.eval()
        m = ro.completion_mask.float()
        row = {"step": step + 1, "loss": float(loss.detach()), "reward": float(total.mean()),
               **{f"reward_{k}": float(v.mean()) for k, v in rewards.items()},
               "reward_std": float(total.view(-1, G).std(1).mean()), **sampled,
               "length": float(ro.lengths.float().mean()),
               "truncated_frac": float((~ro.stopped).float().mean()),
               "entropy": float((ent.detach() * m).sum() / m.sum()), **stats,
               "seconds": time.time() - t_round}
        if "accuracy" in rewards:  # lengths of right and wrong replies: what the length bias acts on
            right = (rewards["accuracy"] > 0).to(dev)
            for name, rows in (("length_right", right), ("length_wrong", ~right)):
                if rows.any():
                    row[name] = float(ro.lengths[rows].float().mean())
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


def _sample_round(model, tokenizer, tasks: Sequence[Task], cfg: GRPOConfig, funcs: dict, gen: torch.Generator):
    """One round's batch: prompts_per_step prompts x group_size samples, scored (+ the overlong penalty if on).

    With cfg.dynamic_sampling, groups whose rewards are all equal are dropped and more prompts are drawn (at most
    cfg.max_sampling_draws draws) until prompts_per_step groups remain (DAPO); if none remain, the last draw is kept.
    Returns (rollout, {reward name: (N,)}, counts for the log).
    """
    G, P = cfg.group_size, cfg.prompts_per_step
    kept: list[tuple[Rollout, dict]] = []
    n_groups = n_zero = 0
    for _ in range(cfg.max_sampling_draws if cfg.dynamic_sampling else 1):
        batch = [tasks[i] for i in torch.randint(len(tasks), (P,), generator=gen).tolist()]
        ro = sample_completions(model, tokenizer, [t.prompt for t in batch], G, cfg.max_new_tokens,
                                temperature=cfg.temperature, generator=gen)
        rewards = score_completions(ro.texts, [t for t in batch for _ in range(G)], funcs)  # {name: (N,)}
        if cfg.overlong_buffer:
            rewards["overlong"] = torch.tensor(overlong_penalty(ro.lengths, cfg.max_new_tokens, cfg.overlong_buffer))
        informative = informative_groups(torch.stack(list(rewards.values())).sum(0), G)  # (P,)
        n_groups, n_zero = n_groups + P, n_zero + int((~informative).sum())
        if not cfg.dynamic_sampling:
            kept.append((ro, rewards))
            break
        rows = informative.repeat_interleave(G)  # (N,)
        if rows.any():
            kept.append((ro.select(rows), {k: v[rows] for k, v in rewards.items()}))
        if sum(len(r.texts) for r, _ in kept) >= P * G:
            break
    if not kept:
        kept.append((ro, rewards))
    ro = concat_rollouts([r for r, _ in kept], tokenizer.pad_token_id).select(slice(0, P * G))
    rewards = {k: torch.cat([rw[k] for _, rw in kept])[:P * G] for k in kept[0][1]}
    return ro, rewards, {"zero_std_frac": n_zero / n_groups, "sampled_groups": n_groups, "kept_groups": len(ro.texts) // G}


def gpu_plan(model_id: str = "Qwen/Qwen3-0.6B", *, prompts_per_step: int = 8, group_size: int = 8,
             prompt_len: int = 256, completion_len: int = 512, micro_batch: int = 8, gpu_tflops: float = 990.0, mfu: float = 0.3,
             gpu_bandwidth_gbs: float = 3350.0, decode_overhead_ms: float = 20.0) -> dict:
    """Predicted memory (GiB) and seconds per round for GRPO on a hub model (full fine-tuning, bf16, no vLLM).

    Memory: policy training on micro-batches of `micro_batch` sequences (course_utils.memory) + a bf16 reference copy + the KV cache of all N sampled sequences.
    Time: training ≈ 6·params·tokens / (tflops·mfu) (+2·params·tokens for old/ref log-probs); decoding is
    memory-bound: completion_len steps × (weights read once + a fixed per-step Python/kernel overhead).
    """
    from ..attention import kv_cache_bytes
    from ..memory import KNOWN_MODELS, estimate_training_memory

    check_choice("model_id", model_id, list(KNOWN_MODELS))
    for name, v in (("prompts_per_step", prompts_per_step), ("group_size", group_size), ("prompt_len", prompt_len),
                    ("completion_len", completion_len), ("micro_batch", micro_batch)):
        check_int(name, v)
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
