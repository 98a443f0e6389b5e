"""Does DPO, online DPO or GRPO raise course-tiny-sft's held-out addition accuracy? A learning-rate sweep of each.

    python benchmarks/bench_preference_vs_rl.py              # about 30 minutes on 2 CPU cores
    python benchmarks/bench_preference_vs_rl.py --only grpo  # just the GRPO runs

DPO: 2,000 train-split addition prompts, the SFT model's own wrong greedy replies as rejected and the right worked
reply as chosen (on-policy pairs), 150 steps of 8 pairs, beta 0.1, with and without the SFT term on the chosen replies.
Online DPO: the same loss, but every step samples 4 replies for 8 fresh prompts from the current policy and pairs a
right reply with a wrong one (dpo.make_online_pair_batch_fn), 300 steps of 8 pairs, beta 0.1.
GRPO: the lab 09 recipe (8 prompts x 8 samples per round, accuracy + format + digits rewards, beta 0.04), 300 s.
All three are scored by greedy exact match on the same 200 held-out (test-split) addition problems.

Measured on 2 CPU cores (AMD EPYC, 2 threads), start 0.765:
    DPO  lr 5e-6: 0.715, + SFT term 0.790     DPO  lr 1e-5: 0.475, + SFT term 0.695
    DPO  lr 3e-5: 0.085, + SFT term 0.470     DPO  lr 3e-4: 0.000, + SFT term 0.420    (each about 37 s of training)
    online DPO lr 1e-5: 0.835    online DPO lr 3e-5: 0.880    online DPO lr 1e-4: 0.905    (each 283-311 s)
    GRPO (runs with these settings, evaluated every 25 rounds) lr 5e-5: 0.855 after 300 s; lr 3e-4: 0.475 after 420 s;
    lab 09 in the cpu profile, lr 5e-5: 0.835 after 543 s
DPO on a fixed set of pairs lowers held-out accuracy at every learning rate tried; the SFT term only slows the damage.
The same loss on pairs sampled from the current policy (online DPO) raises it at every learning rate tried, as GRPO does.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import course_utils as cu
from course_utils import data, dpo, grpo
from course_utils.rewards import ALL_REWARD_FUNCS
from course_utils.train import TrainConfig, train

SFT_DIR = cu.env.REPO_ROOT / "data" / "course-tiny-sft"


def held_out_accuracy(model, tok, tasks) -> float:
    return dpo.evaluate_replies(model, tok, tasks)["accuracy"]


def run_dpo(tok, tasks, lr: float, sft_weight: float) -> tuple[float, float]:
    """(held-out accuracy after, seconds of training)."""
    model, _ = cu.load_model(str(SFT_DIR), device="cpu")
    pairs = dpo.model_mistake_pairs(model, tok, data.make_tasks(2000, "train", seed=5, families=["addition"]))
    ref = dpo.frozen_copy(model)
    batch_fn = dpo.make_pair_batch_fn(dpo.tokenize_pairs(tok, pairs), 8, tok.pad_token_id, seed=0)
    loss_fn = dpo.make_loss_fn(dpo.PreferenceConfig("dpo", beta=0.1, sft_weight=sft_weight), ref)
    run = train(model, loss_fn, batch_fn, TrainConfig(steps=150, lr=lr, warmup=15))
    return held_out_accuracy(model, tok, tasks), run.seconds


def run_online_dpo(tok, tasks, lr: float) -> tuple[float, float]:
    model, _ = cu.load_model(str(SFT_DIR), device="cpu")
    ref = dpo.frozen_copy(model)
    train_tasks = data.make_tasks(4000, "train", seed=0, families=["addition"])
    batch_fn = dpo.make_online_pair_batch_fn(model, tok, train_tasks, 8, group_size=4, seed=0)
    run = train(model, dpo.make_loss_fn(dpo.PreferenceConfig("dpo", beta=0.1), ref), batch_fn,
                TrainConfig(steps=300, lr=lr, warmup=15))
    return held_out_accuracy(model, tok, tasks), run.seconds


def run_grpo(tok, tasks, lr: float, seconds: float) -> tuple[float, float]:
    policy, _ = cu.load_model(str(SFT_DIR), device="cpu")
    cfg = grpo.GRPOConfig(steps=10_000, prompts_per_step=8, group_size=8, max_new_tokens=40, lr=lr, num_iterations=2,
                          beta=0.04, max_seconds=seconds)
    train_tasks = data.make_tasks(4000, "train", seed=0, families=["addition"])
    result = grpo.train_grpo(policy, tok, train_tasks, cfg, ref_model=copy.deepcopy(policy).requires_grad_(False),
                             reward_funcs=ALL_REWARD_FUNCS)
    return held_out_accuracy(policy, tok, tasks), result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["dpo", "online", "grpo"], default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grpo-seconds", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = cu.load_model(str(SFT_DIR), device="cpu")
    tasks = data.make_eval_tasks(200, "test", seed=1, families=["addition"])
    print(f"SFT checkpoint: held-out addition accuracy {held_out_accuracy(model, tok, tasks):.3f}", flush=True)
    if args.only in (None, "dpo"):
        for lr in (5e-6, 1e-5, 3e-5, 3e-4):
            for sft_weight in (0.0, 1.0):
                acc, secs = run_dpo(tok, tasks, lr, sft_weight)
                print(f"DPO  lr {lr:.0e} sft_weight {sft_weight:.0f}: accuracy {acc:.3f} ({secs:.0f} s)", flush=True)
    if args.only in (None, "online"):
        for lr in (1e-5, 3e-5, 1e-4):
            acc, secs = run_online_dpo(tok, tasks, lr)
            print(f"online DPO lr {lr:.0e}: accuracy {acc:.3f} ({secs:.0f} s)", flush=True)
    if args.only in (None, "grpo"):
        for lr in (5e-5, 3e-4):
            t0 = time.time()
            acc, secs = run_grpo(tok, tasks, lr, args.grpo_seconds)
            print(f"GRPO lr {lr:.0e}: accuracy {acc:.3f} ({secs:.0f} s, {time.time() - t0:.0f} s with evaluation)", flush=True)


if __name__ == "__main__":
    main()
