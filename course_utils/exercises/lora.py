"""Lecture 06 (LoRA, QLoRA, memory) exercise checks: LoRA parameter count and forward, NF4 dequantization."""

from __future__ import annotations

from typing import Callable

import torch

from ..lora import bitsandbytes_status, dequantize_nf4, quantize_nf4, unpack_4bit
from .runner import call, compare, run_check


def check_lora_param_count(lora_param_count: Callable[[int, int, int], int], trials: int = 6) -> None:
    """lora_param_count(d_in, d_out, r): parameters LoRA adds to one d_out x d_in weight (A is r x d_in, B d_out x r)."""
    def trial():
        gen = torch.Generator().manual_seed(606)
        cases = [(4096, 4096, 16), (4096, 1024, 8)]
        cases += [tuple(int(v) for v in torch.randint(1, 3000, (3,), generator=gen)) for _ in range(trials)]
        for d_in, d_out, r in cases:
            got, expected = call(lora_param_count, d_in, d_out, r), r * d_in + d_out * r
            if got != expected:
                return f"d_in={d_in}, d_out={d_out}, r={r}: got {got}, expected {expected}"
        return None
    return run_check("lora_param_count", trial)


def check_lora_forward(lora_forward: Callable, trials: int = 4) -> None:
    """lora_forward(x, W0, A, B, alpha, r) -> x W0^T + (alpha/r) x A^T B^T; x (N, in), W0 (out, in), A (r, in), B (out, r)."""
    def trial():
        gen = torch.Generator().manual_seed(607)
        for t in range(trials):
            n, d_in, d_out, r = 3 + t, 8 + 4 * t, 5 + 3 * t, 1 + t
            x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
            w0 = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
            a = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
            b = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
            alpha = 2.0 * (t + 1)
            expected = x @ w0.T + (alpha / r) * (x @ a.T @ b.T)
            problem = compare("lora_forward(...)", call(lora_forward, x, w0, a, b, alpha, r), expected, atol=1e-9)
            if problem:
                return problem + f" (trial {t}: r={r}, alpha={alpha})"
        return None
    return run_check("lora_forward", trial)


def check_dequantize_nf4(dequantize: Callable, trials: int = 3) -> None:
    """dequantize(codes, absmax, shape, blocksize) -> weights; compared with bitsandbytes' dequantize_4bit (NF4)."""
    usable, why = bitsandbytes_status()
    if not usable:  # the reference becomes course_utils.lora's NF4 (tests/test_lora.py: identical to bitsandbytes)
        print(f"note: comparing with course_utils.lora.dequantize_nf4, not bitsandbytes: {why}")

    def trial():
        gen = torch.Generator().manual_seed(608)
        for t in range(trials):
            shape = (2 + t, 64 * (1 + t))
            w = torch.randn(shape, generator=gen) * (0.02 + t)
            if not usable:
                codes, absmax = quantize_nf4(w, blocksize=64)
                got = call(dequantize, codes, absmax.clone(), shape, 64)
                problem = compare("dequantize(...)", got, dequantize_nf4(codes, absmax, shape), atol=1e-6, rtol=1e-5)
                if problem:
                    return problem + f" (trial {t}, shape {shape})"
                continue
            import bitsandbytes.functional as bnbF

            packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
            codes = unpack_4bit(packed)  # one code (0..15) per weight
            got = call(dequantize, codes, state.absmax.clone(), shape, 64)
            problem = compare("dequantize(...)", got, bnbF.dequantize_4bit(packed, state), atol=1e-6, rtol=1e-5)
            if problem:
                return problem + f" (trial {t}, shape {shape})"
        return None
    return run_check("dequantize_nf4", trial)


def check_training_memory(predict_training_bytes: Callable) -> None:
    """predict_training_bytes(model) -> bytes of weights + gradients + AdamW states in one training step
    (float32, CPU), compared with what measure_training_memory counts after a real step: full fine-tuning,
    LoRA r=2 and (IA)^3 on course-tiny."""
    import copy

    from ..lora import add_lora
    from ..memory import measure_training_memory
    from ..models import load_model
    from ..peft_methods import add_ia3

    def trial():
        base, _ = load_model("course-tiny", device="cpu")
        ids = torch.randint(4, 900, (2, 16), generator=torch.Generator().manual_seed(609))
        builds = {"full fine-tuning": lambda m: m, "LoRA r=2": lambda m: add_lora(m, "all-linear", r=2, alpha=4),
                  "(IA)3": add_ia3}
        for name, build in builds.items():
            model = build(copy.deepcopy(base))
            got = call(predict_training_bytes, model)
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                return f"predict_training_bytes should return a number of bytes, got {type(got).__name__}"
            meas = measure_training_memory(model, ids)
            expected = meas.params + meas.grads + meas.optimizer
            trainable = [p for p in model.parameters() if p.requires_grad]
            if abs(got - expected) <= 4 * len(trainable) + 1:  # AdamW's step counters: 4 bytes per trainable tensor
                continue
            n_all, n_train = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in trainable)
            hints = {4 * n_all: "that is the weights alone: add a gradient and two AdamW states per trainable weight",
                     16 * n_all: "gradients and optimizer states exist only for parameters with requires_grad=True",
                     4 * n_all + 4 * n_train: "the gradients are there; AdamW adds two states (momentum, variance)",
                     4 * n_all + 12 * n_train + 4 * n_train: "AdamW keeps two states per weight, not three",
                     4 * n_all + 8 * n_train: "each trainable weight also has a gradient"}
            hint = next((h for v, h in hints.items() if abs(got - v) <= 4 * len(trainable) + 1), None)
            return (f"{name}: you predict {got:,.0f} bytes, a real step holds {expected:,.0f}"
                    + (f" -- {hint}" if hint else " (float32: 4 bytes per number)"))
        return None
    return run_check("training memory", trial)
