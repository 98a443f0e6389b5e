"""Distillation of course-tiny-sft (4 layers) into a 3-layer student (its layers 0, 2, 3) with six methods at one
budget (300 steps x 16 replies, lr 2e-3, distill.DistillConfig's defaults), three seeds each; the table notebook 11
shows.

    python benchmarks/bench_distill.py                   # about 20 minutes on 2 CPU cores
    python benchmarks/bench_distill.py --methods sft     # some methods (finished runs in the results file are kept)

Methods (distill.METHODS): sft (cross-entropy on the data set's replies), forward_kl / reverse_kl / jsd (logit
distillation on the same replies, beta 0 / 1 / 0.5), seq_kd (cross-entropy on the teacher's greedy replies to the
same prompts), on_policy (the student samples a reply, the teacher's distribution scores every token: reverse KL).
Held-out greedy accuracy on 200 test-split tasks per family (addition, sort, count), per problem, for paired SEs.
Results: benchmarks/results/distill.json.

Measured on 2 CPU cores (600 tasks per seed; teacher 0.875, student before training 0.157). Accuracy, mean of the three
seeds ± SE over seeds, and the change from sft on the same tasks and seeds (paired, n = 1800):
    sft         0.568 ± 0.012
    forward_kl  0.542 ± 0.001   -0.026 ± 0.007
    seq_kd      0.540 ± 0.008   -0.028 ± 0.008
    jsd         0.478 ± 0.008   -0.090 ± 0.009
    reverse_kl  0.456 ± 0.006   -0.113 ± 0.010
    on_policy   0.444 ± 0.006   -0.124 ± 0.010
No method relearns sort (at most 0.09; the teacher 0.97). One learning rate for all methods (2e-3, chosen for sft in a
pilot run); the divergence losses were not tuned separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

import course_utils as cu
from course_utils import distill
from course_utils.data import make_eval_tasks
from course_utils.sft import evaluate_tasks

SFT_DIR = cu.env.REPO_ROOT / "data" / "course-tiny-sft"
OUT = cu.env.REPO_ROOT / "benchmarks" / "results" / "distill.json"
SEEDS = (0, 1, 2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(distill.METHODS), choices=list(distill.METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args(argv)
    teacher, tok = cu.load_model(str(SFT_DIR), device="cpu")
    cfg = distill.DistillConfig()
    tasks = make_eval_tasks(200, families=cfg.families)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if "teacher" not in results:
        student = distill.make_student(teacher)
        results["teacher"] = evaluate_tasks(teacher, tok, tasks).correct
        results["student_init"] = evaluate_tasks(student, tok, tasks).correct
    results.update({"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                    "config": {**dataclasses.asdict(cfg), "keep_layers": [0, 2, 3]},
                    "families": [t.family for t in tasks]})
    runs = results.setdefault("runs", {})
    for seed in args.seeds:
        for method in args.methods:
            key = f"{method}/seed{seed}"
            if key in runs:
                continue
            cu.seed_everything(seed)
            student = distill.make_student(teacher)
            result = distill.distill(student, teacher, tok, method, dataclasses.replace(cfg, seed=seed))
            ev = evaluate_tasks(student, tok, tasks)
            runs[key] = {"correct": ev.correct, "per_family": ev.per_family, "seconds": round(result.seconds, 1),
                         "losses_every_10": [round(x, 4) for x in result.losses[::10]]}
            print(f"{key:22s} {ev.overall:.3f} {ev.per_family} {result.seconds:.0f} s", flush=True)
            OUT.write_text(json.dumps(results))
    OUT.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
