"""Attention cost benchmark: naive vs torch SDPA vs our tiled (flash-style) attention, and the KV-cache speed-up.

    python benchmarks/bench_attention.py                       # CPU: T = 256..4096, KV cache 64/256/1024 tokens
    python benchmarks/bench_attention.py --device cuda --dtype bfloat16 --lengths 256 512 1024 2048 4096 8192
    python benchmarks/bench_attention.py --json results.json   # also write the rows as JSON

On CUDA it also times each SDPA backend separately (flash / memory-efficient / math). Prints tables of measured
figures: median time per call (ms) and peak extra memory (MiB; CUDA allocator peak, or resident-memory growth on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import attention as A  # noqa: E402


def _sdpa_backend(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend_name]

    def fn(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def _time_and_peak(fn, q, k, v, causal, repeats):
    sync = torch.cuda.synchronize if q.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        fn(q, k, v, causal)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(q, k, v, causal)
            sync()
            times.append(time.perf_counter() - t0)
        if q.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn(q, k, v, causal)
            sync()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = A.peak_memory_bytes(lambda: fn(q, k, v, causal))
    return 1000 * statistics.median(times), peak


def bench_cost(args) -> list[dict]:
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    variants = {"naive": A.ATTENTION_VARIANTS["naive"], "sdpa": A.ATTENTION_VARIANTS["sdpa"],
                "tiled": A.ATTENTION_VARIANTS["tiled"]}
    if dev.type == "cuda":
        for b in ("flash", "efficient", "math"):
            variants[f"sdpa-{b}"] = _sdpa_backend(b)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for T in args.lengths:
        q, k, v = (torch.randn(args.batch, args.heads, T, args.head_dim, generator=gen).to(dev, dtype) for _ in range(3))
        for name, fn in variants.items():
            try:
                ms, peak = _time_and_peak(fn, q, k, v, True, args.repeats)
                err = ""
            except (RuntimeError, torch.OutOfMemoryError) as exc:  # a backend may not support this shape/dtype
                ms, peak, err = float("nan"), float("nan"), str(exc).splitlines()[0][:80]
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append({"variant": name, "T": T, "ms": ms, "peak_MiB": peak / 2**20, "error": err})
            print(f"{name:15s} T={T:6d} {ms:10.2f} ms  peak {peak / 2**20:9.1f} MiB {err}", flush=True)
        del q, k, v
    return rows


def bench_kv(args) -> list[dict]:
    from course_utils.models import load_model

    model, tok = load_model("course-tiny", device=args.device)
    prompt = tok("Once upon a time", return_tensors="pt")["input_ids"].to(args.device)
    A.kv_cache_speedup(model, prompt, [8])  # warm-up
    rows = A.kv_cache_speedup(model, prompt, args.kv_tokens)
    for r in rows:
        print(f"{r['new_tokens']:5d} new tokens: {r['tok_s_cache']:8.1f} tok/s cache, {r['tok_s_no_cache']:8.1f} "
              f"tok/s no cache, speed-up x{r['speedup']:.1f}, same tokens {r['same_tokens']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kv-tokens", type=int, nargs="*", default=[64, 256, 1024])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"torch": torch.__version__, "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
           "machine": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or
           platform.machine(), "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "causal": True}
    print("#", env)
    print("## attention cost (causal)")
    cost = bench_cost(args)
    kv = []
    if args.kv_tokens:
        print("## KV cache, course-tiny greedy decoding")
        kv = bench_kv(args)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "cost": cost, "kv_cache": kv}, indent=1))


if __name__ == "__main__":
    main()
