"""Estimated vs measured training memory: `python benchmarks/bench_memory.py [--out results.json]`.

On CPU: exact accounting (parameters, grads, optimizer states, saved activations) for course-tiny and a
~100M-parameter Qwen3 shape, full / LoRA / QLoRA, next to estimate_training_memory, plus step times.
On CUDA: also the allocator peak (torch.cuda.max_memory_allocated) of a Qwen3-0.6B-shaped model built
from its config (random weights, bf16) for full / LoRA / QLoRA (QLoRA needs bitsandbytes), two batch sizes,
with and without gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from course_utils.lora import add_lora, quantize_model_nf4  # noqa: E402
from course_utils.memory import (QWEN3_100M, estimate_training_memory, measure_training_memory,  # noqa: E402
                                 model_from_config)

MiB = 2**20


def build(shape, method, *, dtype, device, r, n_layers=None):
    if shape == "course-tiny":
        from course_utils.models import load_model
        model, _ = load_model("course-tiny", device=device, dtype=dtype)
    else:
        extra = {"num_hidden_layers": n_layers} if n_layers else {}
        model = model_from_config(shape, dtype=dtype, device=device, **extra)
    if method == "qlora":
        quantize_model_nf4(model, compute_dtype=dtype)
    if method != "full":
        add_lora(model, "all-linear", r=r, alpha=2 * r)
        for m in model.modules():  # adapters in the compute dtype, as peft does for a bf16 model
            if hasattr(m, "lora_A"):
                m.lora_A.to(dtype), m.lora_B.to(dtype)
    return model


def row(label, est, meas, wall):
    out = {"config": label, "wall_s": round(wall, 2)}
    for k in ("params", "grads", "optimizer", "activations"):
        e, m = getattr(est, k), getattr(meas, k)
        out[k] = {"est_MiB": round(e / MiB, 2), "meas_MiB": round(m / MiB, 2), "rel_err": round(e / m - 1, 4) if m else None}
    if meas.peak is not None:
        out["peak"] = {"est_MiB": round(est.peak / MiB, 1), "meas_MiB": round(meas.peak / MiB, 1),
                       "rel_err": round(est.peak / meas.peak - 1, 4),
                       "sum_of_parts_MiB": round(est.total / MiB, 1),
                       "sum_rel_err": round(est.total / meas.peak - 1, 4)}
    return out


def run(configs, device, dtype, dname):
    results = []
    for shape, label, method, B, T, gc, r in configs:
        if method == "qlora":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                print(f"skip {label} {method}: bitsandbytes not installed")
                continue
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        model = build(shape, method, dtype=dtype, device=device, r=r)
        ids = torch.randint(10, 900, (B, T), device=device)
        meas = measure_training_memory(model, ids, grad_checkpointing=gc)
        wall = time.perf_counter() - t0
        est = estimate_training_memory(model, method, batch_size=B, seq_len=T, dtype=dname, lora_r=r,
                                       grad_checkpointing=gc)
        res = row(f"{label} {method} B={B} T={T}{' ckpt' if gc else ''}", est, meas, wall)
        results.append(res)
        line = f"{res['config']:<44}" + "".join(
            f" {k[:5]} {res[k]['est_MiB']:>9.1f}/{res[k]['meas_MiB']:<9.1f}" for k in ("params", "grads", "optimizer", "activations"))
        if "peak" in res:
            line += f" peak {res['peak']['est_MiB']:.0f}/{res['peak']['meas_MiB']:.0f} ({res['peak']['rel_err']:+.1%})"
        print(line + f"  {wall:.1f}s", flush=True)
        del model, meas
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--skip-cpu", action="store_true", help="only the CUDA comparison")
    args = ap.parse_args()
    print("columns: estimate/measured in MiB; peak = estimate vs torch.cuda.max_memory_allocated")
    results = []
    cpu = torch.device("cpu")
    cpu_cfgs = [("course-tiny", "course-tiny", m, 4, 64, False, 8) for m in ("full", "lora", "qlora")]
    cpu_cfgs += [(QWEN3_100M, "qwen3-100M", m, 1, 64, False, 8) for m in ("full", "lora", "qlora")]
    if not args.skip_cpu:
        results += run(cpu_cfgs, cpu, torch.float32, "fp32")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(0)}")
        g = []
        for method in ("full", "lora", "qlora"):
            for B, T in ((1, 1024), (4, 1024)):
                for gc in (False, True):
                    g.append(("Qwen/Qwen3-0.6B", "Qwen3-0.6B", method, B, T, gc, 16))
        results += run(g, gpu, torch.bfloat16, "bf16")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
