"""SFT timings on this machine: seconds per optimizer step (full vs LoRA, padded vs packed) and evaluation speed.

    python benchmarks/bench_sft.py [--steps 10] [--batch 32]
"""

import argparse
import time

import torch

import course_utils as cu
from course_utils import data, sft
from course_utils.train import TrainConfig, train


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    cu.profile("cpu")
    model, tok = cu.load_model("course-tiny", device="cpu")
    examples = [sft.build_sft_example(tok, c) for c in data.make_sft_conversations(2000, "train", seed=0)]
    padded = sft.make_batch_fn(examples, args.batch, tok.pad_token_id)
    rows = sft.pack(examples, 128, tok.pad_token_id)
    n_rows = max(1, args.batch * 33 // 128)  # about the same number of real tokens as a padded batch

    def packed(step):
        idx = torch.arange(step * n_rows, (step + 1) * n_rows) % rows["input_ids"].shape[0]
        return {"input_ids": rows["input_ids"][idx], "labels": rows["labels"][idx], "position_ids": rows["position_ids"][idx]}

    print(f"torch threads {torch.get_num_threads()}, batch {args.batch} conversations, {args.steps} steps each")
    print(f"{'run':28s} {'s/step':>8s} {'labelled tok/s':>15s}")
    for name, make, data_fn in [("full FT, padded", lambda: cu.load_model("course-tiny", device="cpu")[0], padded),
                                ("full FT, packed (128)", lambda: cu.load_model("course-tiny", device="cpu")[0], packed),
                                ("LoRA r=8 (peft), padded", lambda: sft.add_peft_lora(cu.load_model("course-tiny", device="cpu")[0]), padded)]:
        m = make()
        train(m, sft.sft_loss_fn, data_fn, TrainConfig(steps=2, lr=1e-3, warmup=1))  # warm-up
        t = time.perf_counter()
        train(m, sft.sft_loss_fn, data_fn, TrainConfig(steps=args.steps, lr=1e-3, warmup=1))
        dt = (time.perf_counter() - t) / args.steps
        lab = sum(int((data_fn(s)["labels"] != -100).sum()) for s in range(args.steps)) / args.steps
        print(f"{name:28s} {dt:8.3f} {lab / dt:15.0f}")
    tasks = data.make_eval_tasks(20, "test", seed=1)
    t = time.perf_counter()
    sft.evaluate_tasks(model, tok, tasks)
    dt = time.perf_counter() - t
    print(f"evaluation: {len(tasks)} greedy replies in {dt:.1f} s ({len(tasks) / dt:.1f} replies/s)")


if __name__ == "__main__":
    main()
