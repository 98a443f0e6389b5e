"""Knowledge distillation (知识蒸馏): a small student learns from a larger teacher's next-token distributions
(logit distillation, Hinton et al. 2015), from the teacher's own generated replies (sequence-level KD, Kim & Rush
2016; how DeepSeek-R1's distilled models were made: SFT on 800k teacher samples), or from the teacher's scores of
the student's own samples (on-policy distillation, GKD, Agarwal et al. 2024).

    loss = generalized_jsd_loss(student_logits, teacher_logits, beta=0.5, labels=labels)   # = trl GKD, batchmean
    student = make_student(teacher, keep_layers=(0, 2, 3))                                 # layer-dropped init
    result = distill(student, teacher, tokenizer, "forward_kl", DistillConfig(steps=200))

Per token, with p = teacher and q = student distributions over the vocabulary:
forward KL(p || q) (beta 0, mass-covering), reverse KL(q || p) (beta 1, mode-seeking), and the generalized JSD
beta·KL(p || m) + (1-beta)·KL(q || m), m = beta·p + (1-beta)·q (trl's convention, GKD eq. 1).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_int, check_number, check_tensor


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                     temperature: float = 1.0) -> torch.Tensor:
    """Per-position divergence (...,) from logits (..., V): forward KL at beta 0, reverse KL at 1, else JSD(beta)."""
    check_tensor("student_logits", student_logits, min_dim=1, floating=True)
    check_tensor("teacher_logits", teacher_logits, min_dim=1, floating=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    check_number("beta", beta, 0, 1)
    check_number("temperature", temperature, 0, low_open=True, finite=True)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32, or float64 if given
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)

    def kl(log_a, log_b):  # KL(a || b), summed over the vocabulary
        return (log_a.exp() * (log_a - log_b)).sum(-1)

    if beta == 0:
        return kl(log_p, log_q)
    if beta == 1:
        return kl(log_q, log_p)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(1 - beta), log_p + math.log(beta)]), dim=0)
    return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


def generalized_jsd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                         temperature: float = 1.0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar: token_divergence averaged over positions where labels != -100, or, without labels, summed over
    positions and divided by the batch size (trl GKDTrainer.generalized_jsd_loss, reduction "batchmean").
    Logits (B, T, V), labels (B, T) aligned with them (already shifted)."""
    div = token_divergence(student_logits, teacher_logits, beta, temperature)  # (B, T)
    if labels is None:
        return div.sum() / max(div.shape[0], 1)
    check_tensor("labels", labels)
    if labels.shape != div.shape:
        raise ValueError(f"labels must have shape {tuple(div.shape)} like the logits without V, "
                         f"got {tuple(labels.shape)}")
    mask = labels != -100
    return div[mask].sum() / mask.sum().clamp_min(1)


def fit_one_bump(teacher_probs: torch.Tensor, beta: float, steps: int = 2000, lr: float = 0.05,
                 init_mean: float | None = None) -> torch.Tensor:
    """The toy picture of forward vs reverse KL: fit a one-bump student q ∝ exp(-(i - μ)² / 2σ²) over a vocabulary
    of len(teacher_probs) to a teacher p by Adam on token_divergence(beta). Returns q (V,)."""
    check_tensor("teacher_probs", teacher_probs, dims=1, floating=True)
    check_int("steps", steps)
    idx = torch.arange(len(teacher_probs), dtype=torch.float64)
    mean = torch.tensor(float(len(idx)) / 2 if init_mean is None else init_mean, dtype=torch.float64,
                        requires_grad=True)
    log_std = torch.tensor(math.log(len(idx) / 20), dtype=torch.float64, requires_grad=True)
    teacher_logits = teacher_probs.double().clamp_min(1e-12).log()
    opt = torch.optim.Adam([mean, log_std], lr=lr)
    for _ in range(steps):
        logits = -(idx - mean) ** 2 / (2 * log_std.exp() ** 2)
        loss = token_divergence(logits, teacher_logits, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(-(idx - mean.detach()) ** 2 / (2 * log_std.detach().exp() ** 2), dim=0)


def make_student(teacher: nn.Module, keep_layers=(0, 2, 3)) -> nn.Module:
    """A copy of a decoder-only transformers model with only the decoder layers `keep_layers` (DistilBERT's
    initialization: the student starts from every other teacher layer, not from random weights)."""
    n = teacher.config.num_hidden_layers
    keep = list(keep_layers)
    if not keep or len(set(keep)) != len(keep) or not all(isinstance(i, int) and 0 <= i < n for i in keep):
        raise ValueError(f"keep_layers must be distinct layer indices in [0, {n - 1}], got {keep_layers!r}")
    student = copy.deepcopy(teacher)
    student.model.layers = nn.ModuleList(student.model.layers[i] for i in sorted(keep))
    for new_idx, layer in enumerate(student.model.layers):
        layer.self_attn.layer_idx = new_idx  # index into the KV cache
    student.config.num_hidden_layers = len(keep)
    if getattr(student.config, "layer_types", None) is not None:
        student.config.layer_types = [teacher.config.layer_types[i] for i in sorted(keep)]
    return student


# ---- training ------------------------------------------------------------------------------------

# method -> (where the reply tokens come from, the per-token loss against them)
#   labels: the data set's replies; teacher: the teacher's greedy replies (sequence-level KD);
#   student: the student's own samples, scored by the teacher (on-policy distillation)
METHODS = {
    "sft": ("labels", "cross_entropy"),
    "forward_kl": ("labels", "forward_kl"),
    "reverse_kl": ("labels", "reverse_kl"),
    "jsd": ("labels", "jsd"),
    "seq_kd": ("teacher", "cross_entropy"),
    "on_policy": ("student", "reverse_kl"),
}
_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5}


@dataclass
class DistillConfig:
    """One distillation run: the same budget (steps x batch_size replies) for every method."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    temperature: float = 1.0  # softmax temperature of the divergence
    n_prompts: int = 4000  # training prompts (train split)
    max_new_tokens: int = 40  # teacher / student replies
    seed: int = 0
    families: list[str] = field(default_factory=lambda: ["addition", "sort", "count"])


def _reply_batch(rollout) -> dict[str, torch.Tensor]:
    """A rollout (prompt + reply tokens) as a training batch whose labels are the reply tokens."""
    labels = torch.cat([torch.full_like(rollout.prompt_ids, -100),
                        rollout.completion_ids.masked_fill(rollout.completion_mask == 0, -100)], dim=1)
    return {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "labels": labels}


def distill_loss(student, teacher, batch: dict[str, torch.Tensor], loss: str, temperature: float = 1.0):
    """Scalar loss of `student` on a batch's label positions (next-token shifted)."""
    check_choice("loss", loss, ["cross_entropy", *_BETA])
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    if loss == "cross_entropy":
        return F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100)
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return generalized_jsd_loss(logits, teacher_logits, _BETA[loss], temperature, labels=labels)


@dataclass
class DistillResult:
    """A run's method, per-step losses, wall time and configuration."""

    method: str
    losses: list[float]
    seconds: float
    config: dict


def distill(student, teacher, tokenizer, method: str, cfg: DistillConfig | None = None, *,
            checkpoint_dir=None, resume: bool = False, stop_at_step: int | None = None) -> DistillResult:
    """Train `student` in place for cfg.steps with `method` (a key of METHODS) and return its losses.

    checkpoint_dir: save safetensors checkpoints there every quarter of the run; resume=True continues from the
    latest one (a resumed run equals an uninterrupted one). stop_at_step: stop early (simulates an interruption).
    """
    from .data import make_tasks
    from .grpo.rollout import sample_completions
    from .sft import build_sft_example, generate_replies, make_batch_fn
    from .train import TrainConfig, train

    check_choice("method", method, list(METHODS))
    cfg = cfg or DistillConfig()
    check_int("cfg.steps", cfg.steps)
    check_int("cfg.batch_size", cfg.batch_size)
    source, loss = METHODS[method]
    tasks = make_tasks(cfg.n_prompts, "train", seed=cfg.seed + 11, families=cfg.families)
    teacher.eval()
    t0 = time.time()
    if source in ("labels", "teacher"):
        replies = ([t.reply for t in tasks] if source == "labels" else
                   generate_replies(teacher, tokenizer, [t.prompt for t in tasks], max_new_tokens=cfg.max_new_tokens))
        examples = [build_sft_example(tokenizer, [{"role": "user", "content": t.prompt},
                                                  {"role": "assistant", "content": r}]) for t, r in zip(tasks, replies)]
        data = make_batch_fn(examples, cfg.batch_size, tokenizer.pad_token_id, cfg.seed)
    else:
        prompts = [t.prompt for t in tasks]

        def data(step: int) -> dict:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            idx = torch.randint(len(prompts), (cfg.batch_size,), generator=gen).tolist()
            return _reply_batch(sample_completions(student, tokenizer, [prompts[i] for i in idx],
                                                   max_new_tokens=cfg.max_new_tokens, generator=gen))

    save_every = 0 if checkpoint_dir is None else max(1, cfg.steps // 4)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=max(1, cfg.steps // 10), seed=cfg.seed,
                       checkpoint_dir=checkpoint_dir, save_every=save_every)
    result = train(student, lambda model, batch: distill_loss(model, teacher, batch, loss, cfg.temperature), data,
                   tcfg, resume=resume, stop_at_step=stop_at_step)
    student.eval()
    return DistillResult(method, result.losses, time.time() - t0, asdict(cfg))
