"""SFT hyperparameters on one skill: learning rate, passes over the data, batch size, and NEFTune.

    python benchmarks/bench_sft_sweep.py          # about 20 min on 2 CPU cores; writes the JSON below

course-tiny is fine-tuned on a fixed set of addition conversations with the worked reply (lecture 07, section 7.6)
and tested on held-out additions (exact match of the final answer, greedy) after 1, 2 and 4 passes over the data
(checkpoints of one run: the learning-rate schedule spans all 4). Every setting runs with two seeds.
NEFTune (Jain et al. 2023) adds uniform noise to the input embeddings while training (sft.add_neftune).
Results: benchmarks/results/sft_sweep.json (plotted in notebooks/07_sft_lab.ipynb, section 7.7).
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import torch

import course_utils as cu
from course_utils import data, sft
from course_utils.train import TrainConfig, train

OUT = pathlib.Path(__file__).parent / "results" / "sft_sweep.json"
CONFIG = dict(n_train=1280, n_test=100, epochs=[1, 2, 4], seeds=[0, 1],
              settings=[dict(lr=3e-4, batch=32), dict(lr=1e-3, batch=32), dict(lr=3e-3, batch=32),
                        dict(lr=1e-3, batch=8), dict(lr=1e-3, batch=32, neftune_alpha=5.0)])


def run(setting: dict, seed: int, examples, test_tasks, tok) -> dict:
    """One fine-tuning run; held-out accuracy after each number of passes in CONFIG['epochs']."""
    model, _ = cu.load_model("course-tiny", device="cpu")
    batch = setting["batch"]
    per_epoch = len(examples) // batch
    steps = per_epoch * max(CONFIG["epochs"])
    hook = sft.add_neftune(model, setting["neftune_alpha"]) if "neftune_alpha" in setting else None
    batches = sft.make_batch_fn(examples, batch, tok.pad_token_id, seed=seed)
    out = {**setting, "seed": seed, "accuracy": {}, "correct": {}}
    start = time.time()
    with tempfile.TemporaryDirectory() as ckpt:  # one schedule over all passes, evaluated at each checkpoint
        cfg = TrainConfig(steps=steps, lr=setting["lr"], warmup=max(1, steps // 10), save_every=per_epoch,
                          checkpoint_dir=ckpt, keep_last=1, seed=seed)
        for epoch in CONFIG["epochs"]:
            res = train(model, sft.sft_loss_fn, batches, cfg, resume=True, stop_at_step=epoch * per_epoch)
            ev = sft.evaluate_tasks(model, tok, test_tasks)
            out["accuracy"][str(epoch)] = ev.overall
            out["correct"][str(epoch)] = [int(c) for c in ev.correct]
            out["final_loss"] = res.losses[-1] if res.losses else None
    if hook is not None:
        hook.remove()
    out["seconds"] = round(time.time() - start, 1)
    return out


def main() -> None:
    _, tok = cu.load_model("course-tiny", device="cpu")
    tasks = data.make_tasks(CONFIG["n_train"], "train", seed=0, families=["addition"])
    examples = [sft.build_sft_example(tok, data.task_to_messages(t)) for t in tasks]
    test_tasks = data.make_eval_tasks(CONFIG["n_test"], "test", seed=7, families=["addition"])
    results = {"config": CONFIG, "runs": []}
    for setting in CONFIG["settings"]:
        for seed in CONFIG["seeds"]:
            r = run(setting, seed, examples, test_tasks, tok)
            results["runs"].append(r)
            print(f"{setting} seed {seed}: accuracy by passes {r['accuracy']} ({r['seconds']} s)", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
