"""Our generate loop vs model.generate on course-tiny: tokens/s for greedy and sampling with the KV cache.

Run: python benchmarks/bench_decoding.py   (prints a table; outputs are checked to be identical first)
"""

import time

import torch

import course_utils as cu
from course_utils import decoding as dec


def best_time(fn, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    prof = cu.profile()
    model, tok = cu.load_model(prof.model, device="cpu")
    new_tokens = 128
    print(f"profile {prof.name}, threads {torch.get_num_threads()}, {new_tokens} new tokens, EOS suppressed")
    print(f"{'setting':28s} {'ours tok/s':>11s} {'hf tok/s':>10s} {'ours/hf':>8s} {'same':>5s}")
    for batch in (1, 8):
        ids = tok(["Once upon a time,"] * batch, return_tensors="pt").input_ids
        common = dict(suppress_tokens=tok.all_special_ids)
        for name, ours_kw, hf_kw in [
            ("greedy", dict(strategy="greedy"), dict(do_sample=False)),
            ("sample T=0.8 top-p 0.9", dict(strategy="sample", temperature=0.8, top_p=0.9),
             dict(do_sample=True, temperature=0.8, top_p=0.9)),
        ]:
            def ours():
                return dec.generate(model, ids, new_tokens, generator=torch.Generator().manual_seed(0), **common, **ours_kw)

            def hf():
                torch.manual_seed(0)
                return model.generate(ids, max_new_tokens=new_tokens, **common, **hf_kw)

            same = torch.equal(ours(), hf())
            t_ours, t_hf = best_time(ours), best_time(hf)
            n = batch * new_tokens
            print(f"{name + f' (B={batch})':28s} {n / t_ours:11.0f} {n / t_hf:10.0f} {t_hf / t_ours:8.2f} {str(same):>5s}")


if __name__ == "__main__":
    main()
