"""PEFT families on one task at (nearly) equal trainable parameters: LoRA, LoRA+, bottleneck adapters, prefix
tuning, prompt tuning and (IA)^3 on course-tiny; and the notes' LoRA+ (A's learning rate raised, not B's).

    python benchmarks/bench_peft_methods.py          # about 20 min on 2 CPU cores; writes the JSON below
    python benchmarks/bench_peft_methods.py --only prefix prompt "(IA)3"   # rerun some methods, keep the others' results

Task: `sort` written as 'Task: Sort these numbers: ... / Answer: <<...>>', a format course-tiny never saw (it can
sort when asked in its pretraining prose). Each method first picks its learning rate from its LR_GRID by the loss on
a validation set (its own tasks, none in the test set), then trains with SEEDS at that rate; we report held-out
exact match (greedy, lora.answer_correct) with its binomial SE, held-out loss, trainable parameters and the
measured memory of one training step (course_utils.memory.measure_training_memory, fp32 on CPU).
Results: benchmarks/results/peft_methods.json (shown in notebooks/06_lora_qlora_memory.ipynb, section 6.4).
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import time

import torch

import course_utils as cu
from course_utils import lora as L
from course_utils import peft_methods as P
from course_utils.memory import measure_training_memory
from course_utils.stats import binomial_se

OUT = pathlib.Path(__file__).parent / "results" / "peft_methods.json"
# sizes chosen so every method trains ~18.5k parameters except (IA)^3, which has a fixed 3,840 on course-tiny
SIZES = {"LoRA": 1, "LoRA+": 1, "LoRA, A faster (the notes)": 1, "adapter": 4, "prefix": 18, "prompt": 72, "(IA)3": 1}
# lora_B's learning rate over the rest's: LoRA+ trains B 16x faster (Hayou et al.); the notes raise A's instead
LR_RATIO_B = {"LoRA+": 16.0, "LoRA, A faster (the notes)": 1 / 16}
# learning rates tried per method; soft prompts, prefixes and (IA)3 scales want larger ones (Lester et al. used 0.3)
LR_GRID = {m: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1] + ([3e-1] if m in ("prefix", "prompt", "(IA)3") else []) for m in SIZES}
CONFIG = dict(family="sort", n_train=400, n_val=100, n_test=100, steps=150, batch_size=8, lr_ratio_B=LR_RATIO_B,
              lr_grid=LR_GRID, seeds=[0, 1, 2], sizes=SIZES)


def texts(split: str, n: int, seed: int) -> list[str]:
    return L.task_texts(n, split=split, seed=seed, families=[CONFIG["family"]])


def run(base, tok, method: str, lr: float, seed: int, train: list[str]):
    """Train one method from a fresh copy of `base`; returns (model, losses, seconds)."""
    model = P.attach(copy.deepcopy(base), "LoRA" if method in LR_RATIO_B else method, SIZES[method], seed=seed)
    start = time.time()
    losses = L.finetune(model, tok, train, steps=CONFIG["steps"], batch_size=CONFIG["batch_size"], lr=lr,
                        seed=seed, lr_ratio_B=LR_RATIO_B.get(method, 1.0))
    return model, losses, time.time() - start


def main(only: list[str] | None = None) -> None:
    c = CONFIG
    base, tok = cu.load_model("course-tiny", device="cpu")
    train = texts("train", c["n_train"], 0)
    test = texts("test", c["n_test"], 1)
    val = [t for t in texts("test", 2 * c["n_val"], 2) if t not in set(test)][: c["n_val"]]
    batch = tok(train[: c["batch_size"]], return_tensors="pt", padding=True)["input_ids"]
    results = {"config": c, "lr_search": {}, "runs": []}
    if only:  # keep the other methods' results from the last full run
        unknown = [m for m in only if m not in SIZES]
        if unknown:
            raise SystemExit(f"--only: unknown methods {unknown}; choose from {list(SIZES)}")
        old = json.loads(OUT.read_text())
        results["lr_search"] = {m: v for m, v in old["lr_search"].items() if m not in only}
        results["runs"] = [r for r in old["runs"] if r["method"] not in only]
    for method in only or SIZES:
        val_loss = {}
        for lr in c["lr_grid"][method]:
            model, _, _ = run(base, tok, method, lr, 0, train)
            val_loss[lr] = L.eval_loss(model, tok, val)
            print(f"{method:8s} lr {lr:.0e}: validation loss {val_loss[lr]:.3f}", flush=True)
        best = min(val_loss, key=val_loss.get)
        results["lr_search"][method] = {"val_loss": {str(k): v for k, v in val_loss.items()}, "best_lr": best}
        for seed in c["seeds"]:
            model, losses, secs = run(base, tok, method, best, seed, train)
            correct = L.answer_correct(model, tok, test)
            mem = measure_training_memory(copy.deepcopy(model), batch)
            acc = sum(correct) / len(correct)
            results["runs"].append({"method": method, "seed": seed, "lr": best, "accuracy": acc,
                                    "accuracy_se": binomial_se(acc, len(correct)), "n_test": len(correct),
                                    "heldout_loss": L.eval_loss(model, tok, test), "final_train_loss": losses[-1],
                                    "trainable": L.count_parameters(model)[0], "seconds": round(secs, 1),
                                    "memory": {k: getattr(mem, k) for k in ("params", "grads", "optimizer",
                                                                            "activations")}})
            print(f"{method:8s} seed {seed} lr {best:.0e}: accuracy {acc:.2f}, {secs:.0f} s", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    results["lr_search"] = {m: results["lr_search"][m] for m in SIZES if m in results["lr_search"]}  # in SIZES order
    results["runs"].sort(key=lambda r: (list(SIZES).index(r["method"]), r["seed"]))
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="methods to rerun (the others' results are kept)")
    torch.set_num_threads(2)
    main(parser.parse_args().only)
