"""GRPO on course-tiny-sft with controls and ablations at one budget, and pass@k curves before and after.

    python benchmarks/bench_grpo_controls.py                 # about an hour on 2 CPU cores
    python benchmarks/bench_grpo_controls.py --runs random   # one run (finished runs in the results file are kept)

Every run: the lab 09 recipe (8 train-split addition prompts x 8 samples a round, lr 5e-5, mu = 2, clip 0.2,
40-token budget, seed 0, the same prompts and sampling seeds) for --rounds rounds, changing one thing:
    verifier          format + accuracy + digits rewards, beta 0.04, loss "grpo" (the notebook's run)
    format_only       the format reward alone (a control: says nothing about the answer)
    random            a coin flip per reply (a control: says nothing at all; Shao et al. 2025)
    no_kl             verifier rewards, beta 0 (no reference model)
    clip_higher       verifier, epsilon_high 0.28 (DAPO's clip-higher)
    dynamic_sampling  verifier, groups with equal rewards dropped and refilled (DAPO)
    dr_grpo           verifier, loss "dr_grpo" without std scaling (Dr. GRPO)
    dapo              DAPO's four changes together: token-level loss, clip-higher, dynamic sampling, overlong penalty,
                      and no KL
The KL to the SFT model is logged in every run (with beta 0 it is measured, not penalized).
Held-out greedy accuracy (exact, strict, lenient) on the same 400 test-split problems every 25 rounds; the per-problem
results at the start and the end are stored for paired standard errors. Then pass@k (k = 1..64, unbiased) of the SFT
model and of the verifier run's model from 64 samples on 200 of those problems, and which problems each solves.
Results: benchmarks/results/grpo_controls.json (notebook 09 plots them).

Measured on 2 CPU cores (start 0.935 on 400 problems; end, and gain over the start paired over problems ± SE):
    verifier 0.968 (+0.033 ± 0.010)   format_only 0.945 (+0.010 ± 0.012)   random 0.535 (-0.400 ± 0.025)
    no_kl 0.970   clip_higher 0.970   dynamic_sampling 0.975   dr_grpo 0.968   dapo 0.975   (all within ~1 SE of verifier)
    pass@1 / pass@8 / pass@64 on 200 problems: SFT 0.673 / 0.972 / 0.995, after GRPO 0.841 / 0.984 / 0.990
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time

import torch

import course_utils as cu
from course_utils import grpo
from course_utils.data import make_eval_tasks, make_tasks
from course_utils.rewards import REWARD_SETS

SFT_DIR = cu.env.REPO_ROOT / "data" / "course-tiny-sft"
OUT = cu.env.REPO_ROOT / "benchmarks" / "results" / "grpo_controls.json"
BASE = dict(prompts_per_step=8, group_size=8, max_new_tokens=40, lr=5e-5, num_iterations=2, clip_eps=0.2, beta=0.04,
            loss_type="grpo", seed=0, eval_every=25)
RUNS = {  # name: (reward set, changes to BASE)
    "verifier": ("all", {}),
    "format_only": ("format_only", {}),
    "random": ("random", {}),
    "no_kl": ("all", {"beta": 0.0}),
    "clip_higher": ("all", {"clip_eps_high": 0.28}),
    "dynamic_sampling": ("all", {"dynamic_sampling": True}),
    "dr_grpo": ("all", {"loss_type": "dr_grpo", "scale_rewards": False}),
    "dapo": ("all", {"loss_type": "dapo", "clip_eps_high": 0.28, "dynamic_sampling": True, "overlong_buffer": 8,
                     "beta": 0.0}),
}
KS = [1, 2, 4, 8, 16, 32, 64]


def evaluate(model, tok, tasks) -> dict:
    ev = grpo.evaluate_policy(model, tok, tasks, max_new_tokens=40)
    return {k: ev[k] for k in ("greedy", "strict", "lenient", "correct")}


def run_one(name: str, rounds: int, train_tasks, eval_tasks, tok) -> tuple[dict, torch.nn.Module]:
    rewards, changes = RUNS[name]
    policy, _ = cu.load_model(str(SFT_DIR), device="cpu")
    cfg = grpo.GRPOConfig(steps=rounds, **{**BASE, **changes})
    evals = {}

    def on_round(row):
        if row["step"] % cfg.eval_every == 0 or row["step"] == rounds:
            evals[row["step"]] = evaluate(policy, tok, eval_tasks)

    evals[0] = evaluate(policy, tok, eval_tasks)
    reference = copy.deepcopy(policy).requires_grad_(False)  # also for beta = 0: the KL is then logged, not penalized
    result = grpo.train_grpo(policy, tok, train_tasks, dataclasses.replace(cfg, eval_every=0), ref_model=reference,
                             reward_funcs=REWARD_SETS[rewards], callback=on_round)
    keep = ("step", "reward", "reward_accuracy", "reward_format", "reward_digits", "reward_random", "zero_std_frac",
            "sampled_groups", "kept_groups", "length", "length_right", "length_wrong", "truncated_frac", "entropy", "kl", "clip_frac",
            "seconds")
    history = [{k: h[k] for k in keep if k in h} for h in result.history]
    steps = sorted(evals)
    return {"rewards": rewards, "config": grpo.config_dict(cfg), "history": history,
            "eval": [{"step": s, **{k: evals[s][k] for k in ("greedy", "strict", "lenient")}} for s in steps],
            "correct_start": evals[0]["correct"], "correct_end": evals[steps[-1]]["correct"],
            "seconds": round(result.seconds, 1)}, policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-eval", type=int, default=400)
    parser.add_argument("--n-passk", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["setup"] = {"rounds": args.rounds, "n_eval": args.n_eval, "n_passk": args.n_passk, "ks": KS,
                        "threads": args.threads, "machine": platform.processor() or platform.machine(),
                        "torch": torch.__version__}
    results.setdefault("runs", {})
    _, tok = cu.load_model(str(SFT_DIR), device="cpu")
    train_tasks = make_tasks(4000, "train", seed=0, families=["addition"])
    eval_tasks = make_eval_tasks(args.n_eval, "test", seed=1, families=["addition"])
    for name in args.runs:
        t0 = time.time()
        results["runs"][name], policy = run_one(name, args.rounds, train_tasks, eval_tasks, tok)
        ev = results["runs"][name]["eval"]
        print(f"{name:17s} greedy {ev[0]['greedy']:.3f} -> {ev[-1]['greedy']:.3f}  ({time.time() - t0:.0f} s)", flush=True)
        if name == "verifier":
            sft, _ = cu.load_model(str(SFT_DIR), device="cpu")
            passk_tasks = eval_tasks[:args.n_passk]
            counts = {who: grpo.sample_correct_counts(m, tok, passk_tasks, KS[-1], seed=2)
                      for who, m in (("sft", sft), ("grpo", policy))}
            results["passk"] = {who: {"correct": c["correct"], "tokens": c["tokens"],
                                      "curve": grpo.pass_at_k_curve(c, KS),
                                      "majority": [grpo.majority_at_k(c, passk_tasks, k) for k in KS]}
                                for who, c in counts.items()}
            results["passk"]["coverage"] = grpo.coverage(counts["sft"], counts["grpo"])
            print("pass@k sft ", [round(m, 3) for m, _ in results["passk"]["sft"]["curve"]], flush=True)
            print("pass@k grpo", [round(m, 3) for m, _ in results["passk"]["grpo"]["curve"]], flush=True)
        OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
