"""Lecture 11 (quantization and distillation) exercise checks: per-group absmax, forward KL, which layer suffers."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def check_group_absmax(fake_quantize_groups: Callable, trials: int = 4) -> None:
    """fake_quantize_groups(w (out, in), bits, group_size) -> the dequantized (out, in) matrix, one symmetric absmax
    scale per group of `group_size` consecutive inputs of a row, codes in [-(2^(bits-1) - 1), 2^(bits-1) - 1]."""
    def trial():
        gen = torch.Generator().manual_seed(1101)
        for t in range(trials):
            bits, group = ((4, 8), (3, 4), (8, 16), (2, 8))[t]
            w = torch.randn(3 + t, 32, generator=gen, dtype=torch.float64)
            w[0, 5] = 9.0  # one outlier: with per-group scales it only coarsens its own group
            blocks = w.reshape(-1, group)
            qmax = 2 ** (bits - 1) - 1
            scale = blocks.abs().amax(1, keepdim=True) / qmax
            expected = (torch.round(blocks / scale).clamp(-qmax, qmax) * scale).reshape(w.shape)
            got = call(fake_quantize_groups, w.clone(), bits, group)
            problem = compare(f"fake_quantize_groups(w, bits={bits}, group_size={group})", got, expected, atol=1e-9)
            if problem and isinstance(got, torch.Tensor) and got.shape == w.shape:
                per_row = w.abs().amax(1, keepdim=True) / qmax
                if torch.allclose(got.double(), torch.round(w / per_row).clamp(-qmax, qmax) * per_row, atol=1e-9):
                    return problem + ": that is one scale per row; reshape to (-1, group_size) first"
            if problem:
                return problem
        return None
    return run_check("per-group absmax quantization", trial)


def check_forward_kl(forward_kl: Callable, trials: int = 4) -> None:
    """forward_kl(student_logits (..., V), teacher_logits (..., V)) -> KL(teacher || student) per position (...)."""
    def trial():
        gen = torch.Generator().manual_seed(1102)
        for t in range(trials):
            s = torch.randn(2, 3 + t, 7, generator=gen, dtype=torch.float64) * (1 + 20 * (t == trials - 1))
            te = torch.randn(2, 3 + t, 7, generator=gen, dtype=torch.float64)
            p, log_p, log_q = te.softmax(-1), te.log_softmax(-1), s.log_softmax(-1)
            expected = (p * (log_p - log_q)).sum(-1)
            got = call(forward_kl, s.clone(), te.clone())
            problem = compare("forward_kl(student_logits, teacher_logits)", got, expected, atol=1e-8)
            if problem and isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.allclose(
                    got, (s.softmax(-1) * (log_q - log_p)).sum(-1), atol=1e-8):
                return problem + ": that is the reverse KL(student || teacher); weight by the teacher's probabilities"
            if problem:
                return problem
        return None
    return run_check("forward KL per position", trial)


def check_layer_damage(layer_damage: Callable, layer_types=("down_proj", "q_proj"), bits: int = 3) -> None:
    """layer_damage(model, tokenizer, layer_type, bits) -> float: the rise in mean reply NLL on
    quant.heldout_batch(tokenizer, 64, ["addition", "sort", "count"]) when only the linear layers whose name ends
    with `layer_type` are round-to-nearest quantized (symmetric, per row) to `bits`, on course-tiny-sft."""
    from .. import quant
    from ..env import REPO_ROOT
    from ..models import load_model

    def trial():
        model, tok = load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
        batch = quant.heldout_batch(tok, 64, ["addition", "sort", "count"])
        base = quant.reply_nll(model, batch).mean().item()
        for layer_type in layer_types:
            got = call(layer_damage, model, tok, layer_type, bits)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if not isinstance(got, (int, float)):
                return f"layer_damage should return a float, got {type(got).__name__}"
            quantized = {name: quant.fake_quantize(m.weight.detach(), bits) for name, m in model.named_modules()
                         if name.endswith(layer_type) and isinstance(m, torch.nn.Linear)}
            saved = {name: m.weight.detach().clone() for name, m in model.named_modules() if name in quantized}
            modules = dict(model.named_modules())
            with torch.no_grad():
                for name, w in quantized.items():
                    modules[name].weight.copy_(w)
                expected = quant.reply_nll(model, batch).mean().item() - base
                for name, w in saved.items():
                    modules[name].weight.copy_(w)
            if abs(got - expected) > 1e-4 + 0.02 * abs(expected):
                return (f"layer_damage(model, tok, {layer_type!r}, {bits}) = {got:.5f}, expected {expected:.5f}. "
                        f"Restore the float weights afterwards, and quantize only layers ending with {layer_type!r}")
            if not torch.equal(modules[next(iter(saved))].weight, saved[next(iter(saved))]):
                return "the model's float weights were not restored after the measurement"
        return None
    return run_check("damage of one layer type at low bits", trial)
