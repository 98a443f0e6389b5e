"""DPO vs SimPO on course-tiny-sft: time per optimizer step, reference-model memory, parity with trl.

    python benchmarks/bench_dpo.py            # prints a table; CPU threads fixed by --threads (default 1)
"""

from __future__ import annotations

import argparse
import time

import torch

import course_utils as cu
from course_utils import dpo


def time_steps(method: str, model, ref, batch_fn, steps: int, beta: float) -> float:
    """Mean seconds per optimizer step (forward + backward + AdamW), after one warm-up step."""
    cfg = dpo.PreferenceConfig(method, beta=beta, gamma=1.0)
    loss_fn = dpo.make_loss_fn(cfg, ref if method == "dpo" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(model, batch_fn(step))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def trl_parity(n: int = 64) -> float:
    """Max |dpo_loss - trl| over random float64 log-probs (trl's own _compute_loss through a stub, as in the tests)."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("test_dpo", Path(__file__).resolve().parent.parent / "tests" / "test_dpo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["test_dpo"] = mod
    spec.loader.exec_module(mod)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for i in range(n):
        pc, pr, rc, rr = mod._random_logps(1, gen)
        ours = dpo.dpo_loss(pc, pr, rc, rr, 0.1)[0]
        theirs, _ = mod._trl_sigmoid(pc, pr, rc, rr, 0.1)
        worst = max(worst, abs(ours.item() - theirs.item()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = cu.load_model(str(cu.models.REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
    examples = dpo.tokenize_pairs(tok, dpo.make_preference_pairs(256, "train", seed=0))
    ref = dpo.frozen_copy(model)
    print(f"threads {args.threads}, torch {torch.__version__}, model course-tiny-sft "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params)")
    print(f"reference model held by DPO (not SimPO): {dpo.model_bytes(ref) / 2**20:.1f} MiB")
    print(f"{'pairs/step':>10s} {'DPO s/step':>11s} {'SimPO s/step':>13s} {'SimPO/DPO':>10s}")
    for bs in (4, 8, 16):
        batch_fn = dpo.make_pair_batch_fn(examples, bs, tok.pad_token_id)
        policy = dpo.frozen_copy(ref).requires_grad_(True)
        t_dpo = time_steps("dpo", policy, ref, batch_fn, args.steps, 0.1)
        policy = dpo.frozen_copy(ref).requires_grad_(True)
        t_simpo = time_steps("simpo", policy, None, batch_fn, args.steps, 2.0)
        print(f"{bs:10d} {t_dpo:11.3f} {t_simpo:13.3f} {t_simpo / t_dpo:10.2f}")
    print(f"dpo_loss vs trl 1.16 sigmoid loss, 64 random pairs: max_diff {trl_parity():.2e}")


if __name__ == "__main__":
    main()
