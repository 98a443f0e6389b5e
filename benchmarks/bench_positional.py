"""Time RoPE application (ours vs transformers) and course-tiny's forward pass at 1x..8x its trained length.

    python benchmarks/bench_positional.py
"""

import time

import torch
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

import course_utils as cu
from course_utils import positional as pe


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    torch.manual_seed(0)
    print(f"{'what':34s} {'ms':>9s}")
    for T in (256, 2048):
        x = torch.randn(4, 4, T, 64)
        pos = torch.arange(T)
        inv_freq, _ = pe.rope_inv_freq(64)
        cos, sin = pe.rope_cos_sin(pos, inv_freq)
        ours = best_of(lambda: pe.apply_rope(x, pos, inv_freq))
        ref = best_of(lambda: apply_rotary_pos_emb(x, x, cos[None], sin[None]))
        print(f"{'apply_rope (ours, incl. cos/sin) T=' + str(T):34s} {ours * 1e3:9.2f}")
        print(f"{'apply_rotary_pos_emb (q and k) T=' + str(T):34s} {ref * 1e3:9.2f}")
    model, tok = cu.load_model("course-tiny", device="cpu")
    stream = pe.heldout_token_stream(tok, 2048)
    with torch.no_grad():
        for m in (1, 2, 4, 8):
            ids = stream[: 256 * m][None]
            t = best_of(lambda: model(input_ids=ids), repeat=3)
            print(f"{'course-tiny forward T=' + str(256 * m):34s} {t * 1e3:9.1f}  ({256 * m / t:,.0f} tokens/s)")


if __name__ == "__main__":
    main()
