"""The DPO family on the same pairs and budget, and a β sweep: what notebook 08 (sections 8.7 and 8.8) plots.

    python benchmarks/bench_dpo_family.py                  # about 30 minutes on 2 CPU cores
    python benchmarks/bench_dpo_family.py --only beta      # just the β sweep
    python benchmarks/bench_dpo_family.py --only controls  # DPO + SFT term, and the SFT term alone
    python benchmarks/bench_dpo_family.py --only timing    # re-time every method (40 steps each), nothing else running

Start: the SFT checkpoint data/course-tiny-sft. Training pairs: 4 replies sampled (temperature 1) from the SFT model for
each of 600 train-split addition prompts; every group with a right and a wrong reply gives one pair (dpo.sampled_pairs),
as notebook 08 builds them. Every method: 150 AdamW steps of 8 pairs, lr 3e-5, 15 warm-up steps, seed 0, on these fixed
pairs (offline); online DPO re-samples its pairs from the current policy at every step instead.
Measured on 200 held-out (test-split) addition problems, greedy exact match, and on held-out pairs sampled the same way
from test prompts: reward accuracy by the implicit reward β·log(π/π_ref) summed over the reply ("implicit") and by the
mean token log-probability ("mean logp", SimPO's reward); KL(π ‖ π_ref) per reply on 4 samples from the policy for each
of 100 held-out prompts (dpo.sampled_kl); the reference model's memory; seconds per training step on this machine
(`--only timing`: 40 steps per method, timed alone, so the methods are compared under the same load).
Writes benchmarks/results/dpo_family.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import course_utils as cu
from course_utils import data, dpo, stats
from course_utils.train import TrainConfig, train

SFT_DIR = cu.env.REPO_ROOT / "data" / "course-tiny-sft"
OUT = Path(__file__).parent / "results" / "dpo_family.json"
STEPS, BATCH, LR = 150, 8, 3e-5

# name -> PreferenceConfig keywords; β = 0.1 (trl's default) unless the method's paper uses another scale
FAMILY = {
    "DPO": dict(method="dpo", beta=0.1),
    "cDPO (ε=0.1)": dict(method="dpo", beta=0.1, label_smoothing=0.1),
    "rDPO (ε=0.1)": dict(method="robust", beta=0.1, label_smoothing=0.1),
    "IPO": dict(method="ipo", beta=0.1),
    "hinge (SLiC)": dict(method="hinge", beta=0.1),
    "KTO": dict(method="kto", beta=0.1),
    "ORPO (λ=0.1)": dict(method="orpo", beta=0.1),
    "SimPO (β=2, γ=1)": dict(method="simpo", beta=2.0, gamma=1.0),
}
# controls: is a gain the preference term's, or the NLL on the chosen replies (the model's own right answers)?
CONTROLS = {
    "DPO + SFT term (RPO)": dict(method="dpo", beta=0.1, sft_weight=1.0),
    "SFT on chosen only": dict(method="orpo", beta=1e-6),  # ORPO with λ → 0: the chosen NLL alone
}
BETAS = (0.01, 0.1, 1.0)


def setup():
    model, tok = cu.load_model(str(SFT_DIR), device="cpu")
    train_tasks = data.make_tasks(4000, "train", seed=0, families=["addition"])
    pairs = dpo.sampled_pairs(model, tok, train_tasks[:600], 4, generator=torch.Generator().manual_seed(0))
    held_tasks = data.make_eval_tasks(200, "test", seed=1, families=["addition"])
    held_pairs = dpo.sampled_pairs(model, tok, data.make_tasks(300, "test", seed=7, families=["addition"]), 4,
                                   generator=torch.Generator().manual_seed(1))
    return model, tok, train_tasks, pairs, held_tasks, held_pairs


def measure(policy, ref, tok, held_tasks, held_examples, beta, start_correct) -> dict:
    replies = dpo.evaluate_replies(policy, tok, held_tasks)
    pairs = dpo.evaluate_pairs(policy, held_examples, tok.pad_token_id, ref_model=ref, beta=beta)
    kl = dpo.sampled_kl(policy, ref, tok, [t.prompt for t in held_tasks[:100]], samples_per_prompt=4, seed=2)
    change = stats.paired_difference(start_correct, replies["correct"])
    n = len(held_tasks)
    return {"accuracy": replies["accuracy"], "accuracy_se": stats.binomial_se(replies["accuracy"], n),
            "change": change.diff, "change_se": change.se, "greedy_tokens": replies["mean_tokens"],
            "implicit_reward_acc": pairs["dpo_acc"], "mean_logp_acc": pairs["avg_acc"], "n_pairs": len(held_examples),
            "sampled_kl": kl["kl"], "sampled_kl_se": kl["se"], "sampled_tokens": kl["mean_tokens"]}


def start(cfg_kw, model, tok, examples, train_tasks, online):
    """(policy, reference, whether the method uses it, loss_fn, batch_fn) for one run from the SFT weights."""
    ref = dpo.frozen_copy(model)
    policy = dpo.frozen_copy(model).requires_grad_(True)
    pcfg = dpo.PreferenceConfig(**cfg_kw)
    needs_ref = dpo.needs_reference(pcfg.method)
    loss_fn = dpo.make_loss_fn(pcfg, ref if needs_ref else None)
    batch_fn = (dpo.make_online_pair_batch_fn(policy, tok, train_tasks, BATCH, group_size=4, seed=0) if online
                else dpo.make_pair_batch_fn(examples, BATCH, tok.pad_token_id, seed=0))
    return policy, ref, needs_ref, loss_fn, batch_fn


def run(name, cfg_kw, model, tok, examples, train_tasks, ctx, online=False) -> dict:
    policy, ref, needs_ref, loss_fn, batch_fn = start(cfg_kw, model, tok, examples, train_tasks, online)
    tcfg = TrainConfig(steps=STEPS, lr=LR, warmup=15, seed=0, checkpoint_dir=tempfile.mkdtemp(prefix="bench_dpo_"))
    result, curve = dpo.train_and_track(policy, tok, loss_fn, batch_fn, tcfg, ctx["held_tasks"], every=30)
    row = {"config": cfg_kw, "online": online, "seconds_per_step": result.seconds / STEPS,
           "reference_mib": dpo.model_bytes(ref) / 2**20 if needs_ref else 0.0,
           "curve": {str(k): sum(v) / len(v) for k, v in curve.items()},
           "train_margin": [m["margin"] for m in result.metrics]}
    row |= measure(policy, ref, tok, ctx["held_tasks"], ctx["held_examples"], cfg_kw["beta"], ctx["start_correct"])
    print(f"{name:18s} acc {row['accuracy']:.3f} (change {row['change']:+.3f} ± {row['change_se']:.3f})  "
          f"implicit {row['implicit_reward_acc']:.2f}  mean-logp {row['mean_logp_acc']:.2f}  "
          f"KL {row['sampled_kl']:.2f} ± {row['sampled_kl_se']:.2f}  {row['seconds_per_step']:.2f} s/step", flush=True)
    return row


def time_steps(cfg_kw, model, tok, examples, train_tasks, online=False, steps=40) -> float:
    """Seconds per training step of one method (after 2 warm-up steps), on the same batches."""
    policy, _, _, loss_fn, batch_fn = start(cfg_kw, model, tok, examples, train_tasks, online)
    train(policy, loss_fn, batch_fn, TrainConfig(steps=2, lr=LR, warmup=1))
    return train(policy, loss_fn, batch_fn, TrainConfig(steps=steps, lr=LR, warmup=1)).seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["family", "controls", "beta", "timing"], default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, train_tasks, pairs, held_tasks, held_pairs = setup()
    examples = dpo.tokenize_pairs(tok, pairs)
    held_examples = dpo.tokenize_pairs(tok, held_pairs)
    start = dpo.evaluate_replies(model, tok, held_tasks)
    ctx = {"held_tasks": held_tasks, "held_examples": held_examples, "start_correct": start["correct"]}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results |= {"setup": {"steps": STEPS, "pairs_per_step": BATCH, "lr": LR, "train_pairs": len(pairs),
                          "held_out_tasks": len(held_tasks), "held_out_pairs": len(held_pairs),
                          "sft_accuracy": start["accuracy"], "threads": args.threads}}
    print(f"{len(pairs)} training pairs, {len(held_pairs)} held-out pairs; SFT accuracy {start['accuracy']:.3f}", flush=True)
    if args.only in (None, "family"):
        family = {name: run(name, kw, model, tok, examples, train_tasks, ctx) for name, kw in FAMILY.items()}
        family["online DPO"] = run("online DPO", FAMILY["DPO"], model, tok, examples, train_tasks, ctx, online=True)
        results["family"] = family
        OUT.write_text(json.dumps(results, indent=1))
    if args.only in (None, "controls"):
        for name, kw in CONTROLS.items():
            results["family"][name] = run(name, kw, model, tok, examples, train_tasks, ctx)
        OUT.write_text(json.dumps(results, indent=1))
    if args.only in (None, "timing"):
        for name, kw in (FAMILY | CONTROLS).items():
            results["family"][name]["seconds_per_step"] = time_steps(kw, model, tok, examples, train_tasks)
        results["family"]["online DPO"]["seconds_per_step"] = time_steps(FAMILY["DPO"], model, tok, examples,
                                                                          train_tasks, online=True)
        print({n: round(r["seconds_per_step"], 3) for n, r in results["family"].items()}, flush=True)
    if args.only in (None, "beta"):
        results["beta"] = {str(b): run(f"DPO beta {b}", dict(method="dpo", beta=b), model, tok, examples, train_tasks, ctx)
                           for b in BETAS}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
