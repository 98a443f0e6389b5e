"""A small shared training loop: any loss of (model, batch), AdamW with warm-up + cosine, safetensors checkpoints, resume.

    result = train(model, loss_fn, batch_fn, TrainConfig(steps=100, checkpoint_dir="runs/x", save_every=20))
    result = train(model, loss_fn, batch_fn, cfg, resume=True)   # continues from the latest checkpoint

`batch_fn(step) -> batch` should be deterministic in `step` (then a resumed run equals an uninterrupted one);
an iterable also works: on resume its first `step * grad_accum` items are skipped.
A checkpoint is a folder step_00000N/ with model.safetensors, optimizer.safetensors, rng.safetensors and
trainer_state.json (written last, so a folder without it is an interrupted save and is ignored).

Under torchrun / `accelerate launch` (torch.distributed initialized, world size > 1) the loop is data-parallel:
parameters are broadcast from rank 0 at the start, gradients and the logged loss are averaged over ranks after
each step, and only rank 0 writes checkpoints. Each rank's `data(step)` must return its own shard.
A CUDA out-of-memory error is re-raised as a RuntimeError with the memory calculator's suggestions.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .checks import check_int, check_number


@dataclass
class TrainConfig:
    """Optimizer, schedule, logging and checkpoint settings for `train`."""

    steps: int = 100  # optimizer steps in the whole run
    lr: float = 1e-3  # peak learning rate
    warmup: int = 10  # linear warm-up steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0  # AdamW weight decay (matrices only)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    grad_clip: float | None = 1.0  # max global grad norm, None = off
    grad_accum: int = 1  # micro-batches per optimizer step
    log_every: int = 0  # print the loss every N steps (0 = silent)
    save_every: int = 0  # write a checkpoint every N steps (0 = never; needs checkpoint_dir)
    checkpoint_dir: str | os.PathLike | None = None  # where step_NNNNNN/ folders go
    keep_last: int = 2  # checkpoints kept on disk
    seed: int = 0  # seeds torch/python/numpy at the start of a fresh run


@dataclass
class TrainResult:
    """What a run produced: per-step losses and metrics, the last step reached, wall time."""

    losses: list[float]
    metrics: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None
    saved: list[str] = field(default_factory=list)  # checkpoint folders this process wrote (rank 0 only under DDP)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step` (0-based): linear warm-up, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=False everywhere)")
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


# ---- checkpoints ---------------------------------------------------------------------------------

def random_batches(examples: list, batch_size: int, collate: Callable[[list], dict], seed: int = 0,
                   replacement: bool = True) -> Callable[[int], dict]:
    """A deterministic data source for `train`: step -> collate(batch_size examples drawn for that step).

    The draw depends only on (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
    """
    if not examples:
        raise ValueError("examples must be non-empty")
    check_int("batch_size", batch_size)

    def batch_fn(step: int) -> dict:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if replacement:
            idx = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        else:
            idx = torch.randperm(len(examples), generator=gen)[:batch_size].tolist()
        return collate([examples[i] for i in idx])
    return batch_fn


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then os.replace (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with tied (shared-storage) tensors stored once; the tie is restored by load_state_dict."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def save_checkpoint(folder: str | os.PathLike, model, optimizer, step: int, *, config: TrainConfig | None = None,
                    losses: list[float] | None = None, metrics: list[dict] | None = None) -> Path:
    """Write model, optimizer, RNG state and step into `folder` (safetensors + JSON, each file atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "model.safetensors", lambda p: save_file(_model_tensors(model), p))
    opt_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"state.{idx}.{k}"] = v
    _atomic_write(folder / "optimizer.safetensors", lambda p: save_file(tensors, p))
    _atomic_write(folder / "rng.safetensors", lambda p: save_file(_rng_tensors(), p))
    state = {"step": step, "optimizer_param_groups": opt_state["param_groups"], "optimizer_scalars": scalars,
             "python_random": repr(random.getstate()), "numpy_random": _np_state(),
             "config": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in asdict(config).items()} if config else None,
             "losses": losses or [], "metrics": metrics or []}
    _atomic_write(folder / "trainer_state.json", lambda p: Path(p).write_text(json.dumps(state)))
    return folder


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete step_NNNNNN folder with the highest step, or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if re.fullmatch(r"step_\d+", p.name) and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def load_checkpoint(folder: str | os.PathLike, model, optimizer=None) -> dict:
    """Restore model (and optimizer, RNG) from `folder`; returns the trainer state dict (step, losses, ...)."""
    folder = Path(folder)
    if not (folder / "trainer_state.json").exists():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (no trainer_state.json)")
    state = json.loads((folder / "trainer_state.json").read_text())
    missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    stored = set(load_file(folder / "model.safetensors"))
    really_missing = [k for k in missing if k not in stored and not _is_tied(model, k, stored)]
    if really_missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {really_missing[:5]}, unexpected {unexpected[:5]}")
    if optimizer is not None:
        tensors = load_file(folder / "optimizer.safetensors")
        opt_state: dict[int, dict[str, Any]] = {}
        for key, v in list(tensors.items()) + list(state["optimizer_scalars"].items()):
            _, idx, k = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[k] = v
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer_param_groups"]})
        rng = load_file(folder / "rng.safetensors")
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        random.setstate(_literal_tuple(state["python_random"]))
        name, keys, pos, has_gauss, cached = state["numpy_random"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return state


def _is_tied(model, key: str, stored: set[str]) -> bool:
    sd = model.state_dict()
    return any(sd[key].untyped_storage().data_ptr() == sd[s].untyped_storage().data_ptr() for s in stored if s in sd)


def _literal_tuple(text: str):
    import ast

    def to_tuple(x):
        return tuple(to_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x
    return to_tuple(ast.literal_eval(text))


# ---- data parallel and out-of-memory helpers -------------------------------------------------------

def dist_info() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) when torch.distributed is not initialized."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_over_ranks(params: list[torch.Tensor], values: list[float], world: int) -> list[float]:
    """All-reduce-average every gradient in place and the given floats (the per-rank losses/metrics)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)
    dev = params[0].device if params else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world).tolist()


def oom_advice(model: torch.nn.Module, batch, step: int | None = None) -> str:
    """What to change after a CUDA out-of-memory error, with the calculator's estimate for each option."""
    from .memory import estimate_training_memory

    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None
    head = f"CUDA out of memory{f' at step {step}' if step is not None else ''}"
    head += f" with a batch of {shape[0]} x {shape[1]} tokens." if shape else "."
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    method = "full" if n_train == n_all else "lora"
    gib = lambda b: f"{b.total / 2**30:.2f} GiB"  # noqa: E731
    tips = []
    if shape:
        try:
            kw = dict(batch_size=shape[0], seq_len=shape[1], dtype="fp32" if next(model.parameters()).dtype ==
                      torch.float32 else "bf16")
            now = estimate_training_memory(model, method, **kw)
            head += f" The memory calculator estimates {gib(now)} for this step (course_utils.memory)."
            if shape[0] > 1:
                half = estimate_training_memory(model, method, **{**kw, "batch_size": max(1, shape[0] // 2)})
                tips.append(f"halve the batch and double TrainConfig.grad_accum (same effective batch): {gib(half)}")
            tips.append("turn on gradient checkpointing (model.gradient_checkpointing_enable()): "
                        + gib(estimate_training_memory(model, method, **kw, grad_checkpointing=True)))
            if method == "full":
                tips.append("train LoRA adapters instead of all weights (sft.add_peft_lora): "
                            + gib(estimate_training_memory(model, "lora", **kw)))
            tips.append("QLoRA: 4-bit base weights + LoRA (lora.load_qlora_model): "
                        + gib(estimate_training_memory(model, "qlora", **kw)))
        except (ValueError, TypeError, KeyError) as exc:  # a model the calculator cannot describe
            head += f" (no estimate: {exc})"
    if not tips:
        tips = ["use a smaller batch with more gradient accumulation", "gradient checkpointing", "LoRA or QLoRA"]
    return head + " Try: " + "; ".join(tips) + "."


# ---- the loop ------------------------------------------------------------------------------------

def train(model: torch.nn.Module, loss_fn: Callable, data: Callable[[int], Any] | Iterable, cfg: TrainConfig, *,
          resume: bool = False, stop_at_step: int | None = None, optimizer=None,
          callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` for cfg.steps optimizer steps of `loss_fn(model, batch)`.

    loss_fn returns a scalar loss, or (loss, {name: float}) to log extra metrics.
    resume: continue from the latest checkpoint in cfg.checkpoint_dir (a fresh start when there is none).
    stop_at_step: stop after this many steps in total (simulates an interruption; the schedule still spans cfg.steps).
    callback: called after every step (rank 0 only) with {"step": steps done, "loss", "lr", and the extra metrics},
        e.g. plotting.live_history to draw the run as it goes.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    for name in ("steps", "grad_accum"):
        check_int(f"cfg.{name}", getattr(cfg, name))
    check_number("cfg.lr", cfg.lr, 0, low_open=True)
    if (cfg.save_every or resume) and cfg.checkpoint_dir is None:
        raise ValueError("cfg.checkpoint_dir must be set to save checkpoints or resume")
    if stop_at_step is not None:
        check_int("stop_at_step", stop_at_step, 1, cfg.steps, allowed=f"None or an int in [1, {cfg.steps}]")
    if not callable(data) and not hasattr(data, "__iter__"):
        raise TypeError(f"data must be a function step -> batch or an iterable of batches, got {type(data).__name__}")

    rank, world = dist_info()
    if world > 1:  # every rank starts from rank 0's weights
        import torch.distributed as dist

        for t in model.state_dict().values():
            if t.is_floating_point():
                dist.broadcast(t, src=0)
    optimizer = optimizer or make_optimizer(model, cfg)
    start, losses, metrics, resumed_from, saved = 0, [], [], None, []
    ckpt = latest_checkpoint(cfg.checkpoint_dir) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        start, losses, metrics, resumed_from = state["step"], state["losses"], state["metrics"], state["step"]
    else:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
    iterator = None if callable(data) else iter(data)
    if iterator is not None:
        for _ in range(start * cfg.grad_accum):
            next(iterator)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    end = stop_at_step or cfg.steps
    model.train()
    t0 = time.time()
    for step in range(start, end):
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        total, extra = 0.0, {}
        for micro in range(cfg.grad_accum):
            batch = data(step * cfg.grad_accum + micro) if iterator is None else next(iterator)
            try:
                out = loss_fn(model, batch)
                loss, info = (out if isinstance(out, tuple) else (out, {}))
                (loss / cfg.grad_accum).backward()
            except torch.cuda.OutOfMemoryError as exc:
                optimizer.zero_grad(set_to_none=True)
                raise RuntimeError(oom_advice(model, batch, step)) from exc
            total += loss.item() / cfg.grad_accum
            for k, v in info.items():
                extra[k] = extra.get(k, 0.0) + float(v) / cfg.grad_accum
        if world > 1:
            total, *vals = _average_over_ranks(params, [total, *extra.values()], world)
            extra = dict(zip(extra, vals))
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
        metrics.append(extra)
        done = step + 1
        if callback is not None and rank == 0:
            callback({"step": done, "loss": total, "lr": lr, **extra})
        if cfg.log_every and rank == 0 and (done % cfg.log_every == 0 or done == end):
            shown = "".join(f"  {k} {v:.3f}" for k, v in extra.items())
            print(f"step {done:5d}  loss {total:.4f}  lr {lr:.2e}{shown}", flush=True)
        if cfg.save_every and (done % cfg.save_every == 0 or done == end):
            if rank == 0:  # one writer; the other ranks hold identical weights
                saved.append(str(save_checkpoint(Path(cfg.checkpoint_dir) / f"step_{done:06d}", model, optimizer,
                                                 done, config=cfg, losses=losses, metrics=metrics)))
                _prune(Path(cfg.checkpoint_dir), cfg.keep_last)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
    model.eval()
    return TrainResult(losses, metrics, end, time.time() - t0, resumed_from, saved)


def _prune(root: Path, keep_last: int) -> None:
    import shutil

    done = sorted((p for p in root.iterdir() if re.fullmatch(r"step_\d+", p.name)), key=lambda p: int(p.name[5:]))
    for p in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
