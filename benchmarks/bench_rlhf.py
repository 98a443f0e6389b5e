"""Classic RLHF on course-tiny-sft: one reward model, then PPO and RLOO against it, with the true reward logged, at one
budget; the runs notebook 10 plots for reward over-optimization and instabilities.

    python benchmarks/bench_rlhf.py                    # about 40 minutes on 2 CPU cores
    python benchmarks/bench_rlhf.py --runs ppo_no_kl   # one run (finished runs in the results file are kept)

The reward model: course-tiny-sft with a scalar head, Bradley-Terry on 600 rule-made sort pairs (a right reply over the
list in its original order, reversed, or with two neighbours swapped) with 10 % of the labels flipped, 2 epochs,
lr 3e-4 (the notebook's). Its held-out accuracy on 400 clean rule-made pairs and on pairs of the SFT model's own right
and wrong samples is stored.
Every run: the notebook's recipe (16 train-split sort prompts x 2 samples a round, 24-token budget, lr 5e-5, critic lr
1e-4, 2 epochs per batch, clip 0.2, seed 0, the same prompts and sampling seeds) for --rounds rounds, changing one thing:
    ppo           PPO against the reward model, KL coefficient 0.05 (the notebook's run)
    ppo_no_kl     the same, no KL penalty (the KL is still logged)
    ppo_kl_0.2    the same, KL coefficient 0.2
    rloo          RLOO against the reward model, KL coefficient 0.05 (no critic)
    ppo_verifier  PPO on the true reward (the verifier's 0/1) instead of the reward model, KL 0.05
    ppo_lr_1e-3   PPO against the reward model with a 20x larger policy learning rate (an instability)
    grpo_verifier lab 09's GRPO on the true reward (accuracy 0/1), 8 prompts x 4 samples a round (the same 32 replies
                  a round), beta 0.04, mu 2: the critic-free, reward-model-free baseline at the same budget
Held-out greedy accuracy on the same 200 test-split prompts every 20 rounds, per-problem results at the start and
the end (for paired standard errors), and each run's greedy replies to 8 of them at the end.
Results: benchmarks/results/rlhf.json (notebook 10 plots them).

Measured on 2 CPU cores. Reward model: 0.895 on 400 held-out rule-made pairs, 0.512 on 82 pairs of the SFT model's own
right and wrong samples. Held-out greedy accuracy on 200 prompts, 0.965 at the start; end (paired change ± SE); the
samples' true reward and proxy over the last 10 rounds; KL (nats per reply):
    ppo           0.825 (-0.140 ± 0.027)   true 0.85  proxy 0.84  KL 0.8
    ppo_no_kl     0.000 (-0.965 ± 0.013)   true 0.00  proxy 1.71  KL 46     (lists of large numbers ending in 99s)
    ppo_kl_0.2    0.950 (-0.015 ± 0.015)   true 0.96  proxy 0.79  KL 0.1
    rloo          0.950 (-0.015 ± 0.015)   true 0.96  proxy 0.80  KL 0.1
    ppo_verifier  0.985 (+0.020 ± 0.016)   true 0.97  KL 0.2
    grpo_verifier 0.985 (+0.020 ± 0.012)   true 0.99
    ppo_lr_1e-3   0.000 (-0.965 ± 0.013)   true 0.00  proxy 1.46  KL 44     (collapsed within 10 rounds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

import course_utils as cu
from course_utils import ppo, reward_model as rm_lib
from course_utils.data import make_eval_tasks, make_tasks
from course_utils.dpo.pairs import make_preference_pairs, sampled_pairs
from course_utils.grpo import evaluate_policy
from course_utils.rewards import accuracy_reward

SFT_DIR = cu.env.REPO_ROOT / "data" / "course-tiny-sft"
OUT = cu.env.REPO_ROOT / "benchmarks" / "results" / "rlhf.json"
FAMILY = ["sort"]
BASE = dict(prompts_per_step=16, group_size=2, max_new_tokens=24, lr=5e-5, critic_lr=1e-4, num_epochs=2,
            clip_eps=0.2, kl_coef=0.05, seed=0, eval_every=0)
RUNS = {
    "ppo": {},
    "ppo_no_kl": {"kl_coef": 0.0},
    "ppo_kl_0.2": {"kl_coef": 0.2},
    "rloo": {"algorithm": "rloo"},
    "ppo_verifier": {"reward": "verifier"},
    "ppo_lr_1e-3": {"lr": 1e-3},
    "grpo_verifier": None,  # lab 09's loop, see run_grpo
}
RM = dict(n_pairs=600, label_noise=0.1, epochs=2.0, lr=3e-4)


def train_reward_model(tok):
    rm, _ = rm_lib.load_reward_model(str(SFT_DIR), seed=0)
    pairs = rm_lib.with_label_noise(make_preference_pairs(RM["n_pairs"], "train", seed=0, families=FAMILY),
                                    RM["label_noise"], seed=0)
    rm_lib.train_reward_model(rm, tok, pairs, rm_lib.RewardConfig(epochs=RM["epochs"], lr=RM["lr"]))
    return rm


def run_one(name: str, rounds: int, rm, train_tasks, eval_tasks, tok) -> dict:
    policy, _ = cu.load_model(str(SFT_DIR), device="cpu")
    evals = {0: evaluate_policy(policy, tok, eval_tasks, max_new_tokens=24)}

    def on_round(row):
        if row["step"] % 20 == 0 or row["step"] == rounds:
            evals[row["step"]] = evaluate_policy(policy, tok, eval_tasks, max_new_tokens=24)

    if RUNS[name] is None:  # GRPO on the verifier (lab 09's loop); its KL is k3 per token, logged as kl_k3
        cfg = cu.grpo.GRPOConfig(steps=rounds, prompts_per_step=8, group_size=4, max_new_tokens=24, lr=5e-5,
                                 num_iterations=2, beta=0.04, seed=0, eval_every=0)
        result = cu.grpo.train_grpo(policy, tok, train_tasks, cfg, reward_funcs={"accuracy": accuracy_reward},
                                    callback=on_round)
        result.history = [{"step": h["step"], "true": h["reward_accuracy"], "kl_k3": h["kl"], "entropy": h["entropy"]}
                          for h in result.history if "reward_accuracy" in h]
        config = cu.grpo.config_dict(cfg)
    else:
        cfg = ppo.PPOConfig(steps=rounds, **{**BASE, **RUNS[name]})
        result = ppo.train_rlhf(policy, tok, train_tasks, rm, cfg, callback=on_round)
        config = ppo.config_dict(cfg)
    steps = sorted(evals)
    shown = eval_tasks[:8]
    replies = cu.grpo.sample_completions(policy, tok, [t.prompt for t in shown], 1, 24, temperature=0).texts
    return {"config": config, "history": result.history,
            "eval": [{"step": s, "greedy": evals[s]["greedy"]} for s in steps],
            "correct_start": evals[0]["correct"], "correct_end": evals[steps[-1]]["correct"],
            "replies": [{"prompt": t.prompt, "answer": t.answer, "reply": r} for t, r in zip(shown, replies)],
            "seconds": round(result.seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-eval", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["setup"] = {"rounds": args.rounds, "n_eval": args.n_eval, "reward_model": RM, "base": BASE,
                        "threads": args.threads, "machine": platform.processor() or platform.machine(),
                        "torch": torch.__version__}
    results.setdefault("runs", {})
    sft, tok = cu.load_model(str(SFT_DIR), device="cpu")
    rm = None
    if any(RUNS[name] is not None for name in args.runs):  # the reward model (GRPO on the verifier needs none)
        t0 = time.time()
        rm = train_reward_model(tok)
        clean = rm_lib.pair_margins(rm, tok, make_preference_pairs(400, "test", seed=1, families=FAMILY))
        own = rm_lib.pair_margins(rm, tok, sampled_pairs(sft, tok, make_tasks(600, "test", seed=2, families=FAMILY), 4,
                                                         max_new_tokens=24, generator=torch.Generator().manual_seed(0)))
        results["reward_model"] = {"clean_pairs_correct": (clean > 0).tolist(), "own_mistake_pairs_correct": (own > 0).tolist()}
        print(f"reward model: {float((clean > 0).float().mean()):.3f} on {len(clean)} rule-made pairs, "
              f"{float((own > 0).float().mean()):.3f} on {len(own)} pairs of the SFT model's samples ({time.time() - t0:.0f} s)",
              flush=True)
    train_tasks = make_tasks(2000, "train", seed=0, families=FAMILY)
    eval_tasks = make_eval_tasks(args.n_eval, "test", seed=1, families=FAMILY)
    for name in args.runs:
        t0 = time.time()
        results["runs"][name] = run_one(name, args.rounds, rm, train_tasks, eval_tasks, tok)
        ev, last = results["runs"][name]["eval"], results["runs"][name]["history"][-1]
        print(f"{name:13s} greedy {ev[0]['greedy']:.3f} -> {ev[-1]['greedy']:.3f}  true {last['true']:.2f}  "
              + "  ".join(f"{k} {last[k]:.2f}" for k in ("proxy", "kl") if k in last) + f"  ({time.time() - t0:.0f} s)",
              flush=True)
        OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
