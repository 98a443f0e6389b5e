"""The SFT lab as a script: the notebook's data, loss and shared training loop, on one process or many.

    python -m course_utils.labs.sft --config configs/sft_ci.json
    torchrun --nproc_per_node 2 -m course_utils.labs.sft --config configs/sft_ci.json        # data parallel
    accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml -m course_utils.labs.sft --config ...

`global_batch_size` conversations per step are split over the processes; the loss is weighted by each shard's
share of the labelled tokens, so N processes follow the same loss trajectory as one (up to float rounding).
A run resumes from the latest complete checkpoint in <out_dir>/checkpoints unless --no-resume is given.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import sft
from ..data import make_eval_tasks, make_sft_conversations
from ..train import TrainConfig, train
from .common import init_distributed, lab_main, loss_summary, micro_batch, process_device, read_config


@dataclass
class SFTLabConfig:
    """One SFT run; a JSON file with any of these keys overrides the defaults."""

    model: str = "course-tiny"  # load_model name or local folder
    n_train: int = 2000  # training conversations (train split of course_utils.data)
    steps: int = 200  # optimizer steps
    global_batch_size: int = 16  # conversations per step, summed over all processes
    grad_accum: int = 1  # micro-batches per step (each process)
    lr: float = 1e-3  # peak AdamW learning rate (warm-up then cosine)
    warmup: int = 20  # warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    lora_r: int = 0  # 0 = full fine-tuning; > 0 = peft LoRA adapters of this rank
    out_dir: str = "runs/sft"  # checkpoints/, losses.json and final/ go here
    save_every: int = 50  # checkpoint every N steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept on disk
    log_every: int = 10  # print the loss every N steps (0 = silent)
    eval_per_family: int = 0  # test tasks per family for accuracy before/after (0 = skip)
    save_final: bool = True  # write <out_dir>/final with save_pretrained (rank 0)
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    seed: int = 0
    threads: int = 0  # torch CPU threads per process (0 = torch's default); fix it for bitwise-repeatable runs
    step_delay: float = 0.0  # seconds of sleep per step: fault-injection tests only


def load_config(path: str | os.PathLike | None, **overrides) -> SFTLabConfig:
    """SFTLabConfig from a JSON file (unknown keys are an error), then keyword overrides."""
    return read_config(SFTLabConfig, path, overrides,
                       {"n_train": 1, "steps": 1, "global_batch_size": 1, "grad_accum": 1})


def shard_batch_fn(global_batch_fn, rank: int, world: int):
    """step -> this rank's rows of the global batch, plus the global count of labelled tokens."""
    def batch_fn(step: int) -> dict:
        full = global_batch_fn(step)
        B = full["input_ids"].shape[0]
        per = B // world
        local = {k: v[rank * per:(rank + 1) * per] for k, v in full.items()}  # (B / world, T)
        n_global = int((full["labels"][:, 1:] != sft.IGNORE_INDEX).sum())
        return {"local": local, "n_global": n_global}
    return batch_fn


def make_loss_fn(world: int, step_delay: float = 0.0):
    """sft.sft_loss_fn on this rank's shard, weighted so the average over ranks is the global-batch loss."""
    def loss_fn(model, batch):
        if step_delay:
            time.sleep(step_delay)
        local = batch["local"]
        n_local = int((local["labels"][:, 1:] != sft.IGNORE_INDEX).sum())
        return sft.sft_loss_fn(model, local) * (n_local * world / batch["n_global"])
    return loss_fn


def run(cfg: SFTLabConfig, *, resume: bool = True) -> dict:
    """Fine-tune cfg.model on the task conversations with train.train; returns a summary (rank 0 writes files)."""
    from ..models import load_model

    rank, world = init_distributed()
    micro = micro_batch(cfg, world)  # conversations per micro-step over all ranks
    dev = process_device(cfg, world)
    model, tok = load_model(cfg.model, device=dev)
    if cfg.lora_r:
        model = sft.add_peft_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r)
    examples = [sft.build_sft_example(tok, c) for c in make_sft_conversations(cfg.n_train, "train", seed=cfg.seed)]
    batch_fn = shard_batch_fn(sft.make_batch_fn(examples, micro, tok.pad_token_id, seed=cfg.seed), rank, world)
    out = Path(cfg.out_dir)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                       grad_accum=cfg.grad_accum, log_every=cfg.log_every, checkpoint_dir=out / "checkpoints",
                       save_every=cfg.save_every or cfg.steps, keep_last=cfg.keep_last, seed=cfg.seed)
    tasks = make_eval_tasks(cfg.eval_per_family, "test", seed=cfg.seed + 1) if cfg.eval_per_family else None
    before = sft.evaluate_tasks(model, tok, tasks).overall if tasks and rank == 0 else None
    result = train(model, make_loss_fn(world, cfg.step_delay), batch_fn, tcfg, resume=resume)
    summary = {"config": asdict(cfg), "rank": rank, "world_size": world, "losses": result.losses,
               "resumed_from": result.resumed_from, "saved": result.saved, "seconds": round(result.seconds, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(summary))
    if rank == 0:
        if tasks:
            summary["accuracy_before"] = before
            summary["accuracy_after"] = sft.evaluate_tasks(model, tok, tasks).overall
        (out / "losses.json").write_text(json.dumps(result.losses))
        if cfg.save_final:
            final = model.merge_and_unload() if cfg.lora_r else model
            final.save_pretrained(out / "final")
            tok.save_pretrained(out / "final")
    return summary


def summary_line(summary: dict) -> dict:
    """What the script prints last: world size, resume step, seconds, final loss (and accuracy before/after)."""
    return loss_summary(summary, ("world_size", "resumed_from", "seconds")) | {
        k: summary[k] for k in ("accuracy_before", "accuracy_after") if k in summary}


def main(argv: list[str] | None = None) -> None:
    lab_main(argv, doc=__doc__, config_cls=SFTLabConfig, load_config=load_config, run=run, summary_line=summary_line)


if __name__ == "__main__":
    main()
