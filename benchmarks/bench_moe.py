"""MoE forward cost on this machine: sparse MoE vs the naive all-experts version vs dense FFNs.

    python benchmarks/bench_moe.py          # prints a table (CPU unless CUDA is available)
"""

from __future__ import annotations

import time

import torch

from course_utils import moe
from course_utils.norms import SwiGLUMLP


def _time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d_model, d_ff, n_experts, top_k = 256, 512, 8, 2
    layer = moe.MoE(d_model, d_ff, n_experts, top_k).to(dev).eval()
    dense_active = SwiGLUMLP(d_model, top_k * d_ff).to(dev).eval()  # same active FLOPs as the MoE
    dense_total = SwiGLUMLP(d_model, n_experts * d_ff).to(dev).eval()  # same parameter count as the experts
    print(f"device {dev}, torch threads {torch.get_num_threads()}; d_model {d_model}, d_ff {d_ff}, "
          f"{n_experts} experts, top-{top_k}")
    print(f"{'tokens':>7} | {'MoE sparse ms':>13} | {'MoE naive ms':>12} | {'dense (active) ms':>17} | "
          f"{'dense (total) ms':>16} | {'MoE tokens/s':>12}")
    for n in (256, 1024, 4096, 16384):
        x = torch.randn(n, d_model, device=dev)
        t_sparse = _time(lambda: layer(x))
        t_naive = _time(lambda: moe.dense_reference_moe(layer, x))
        t_act = _time(lambda: dense_active(x))
        t_tot = _time(lambda: dense_total(x))
        print(f"{n:7d} | {t_sparse * 1e3:13.2f} | {t_naive * 1e3:12.2f} | {t_act * 1e3:17.2f} | "
              f"{t_tot * 1e3:16.2f} | {n / t_sparse:12.0f}")
    for cf in (1.0, 1.25, 2.0):
        capped = moe.MoE(d_model, d_ff, n_experts, top_k, capacity_factor=cf).to(dev).eval()
        capped.load_state_dict(layer.state_dict())
        x = torch.randn(4096, d_model, device=dev)
        t = _time(lambda: capped(x))
        dropped = 1 - capped.last_keep.float().mean().item()
        print(f"capacity factor {cf}: {t * 1e3:.2f} ms for 4096 tokens, {dropped:.3f} of assignments dropped")


if __name__ == "__main__":
    main()
