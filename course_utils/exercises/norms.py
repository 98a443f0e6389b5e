"""Lecture 02 (norms) exercise checks: RMSNorm, LayerNorm, the SwiGLU MLP."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def check_rms_norm(rms_norm: Callable, trials: int = 4) -> None:
    """rms_norm(x, weight, eps) over the last dim; compared with float64 torch.nn.functional.rms_norm."""
    def trial():
        gen = torch.Generator().manual_seed(202)
        for t in range(trials):
            d = int(torch.randint(2, 65, (1,), generator=gen))
            x = torch.randn(3, 5, d, generator=gen, dtype=torch.float64) * (1 + 10 * t)
            w = torch.randn(d, generator=gen, dtype=torch.float64)
            ref = torch.nn.functional.rms_norm(x, (d,), w, eps=1e-6)
            problem = compare("rms_norm(x, weight, eps)", call(rms_norm, x.clone(), w.clone(), 1e-6), ref, atol=1e-6)
            if problem:
                return problem + f" (trial {t}, d={d})"
        return None
    return run_check("RMSNorm", trial)


def check_layer_norm(layer_norm: Callable, trials: int = 4) -> None:
    """layer_norm(x, weight, bias, eps) over the last dim; compared with float64 torch.nn.functional.layer_norm."""
    def trial():
        gen = torch.Generator().manual_seed(203)
        for t in range(trials):
            d = int(torch.randint(2, 65, (1,), generator=gen))
            x = torch.randn(2, 4, d, generator=gen, dtype=torch.float64) * 3 + 5 * t
            w, b = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
            ref = torch.nn.functional.layer_norm(x, (d,), w, b, eps=1e-5)
            problem = compare("layer_norm(x, weight, bias, eps)", call(layer_norm, x.clone(), w, b, 1e-5), ref, atol=1e-6)
            if problem:
                return problem + f" (trial {t}, d={d}; use the biased variance, like torch)"
        return None
    return run_check("LayerNorm", trial)


def check_swiglu(swiglu: Callable, trials: int = 3) -> None:
    """swiglu(x, w_gate, w_up, w_down) with nn.Linear-shaped weights; compared with transformers' Qwen3MLP."""
    def trial():
        from transformers import Qwen3Config
        from transformers.models.qwen3.modeling_qwen3 import Qwen3MLP

        gen = torch.Generator().manual_seed(204)
        for t in range(trials):
            d, h = 8 * (t + 1), 20 * (t + 1)
            mlp = Qwen3MLP(Qwen3Config(hidden_size=d, intermediate_size=h, hidden_act="silu")).double()
            with torch.no_grad():
                for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64) / d ** 0.5)
            x = torch.randn(2, 3, d, generator=gen, dtype=torch.float64)
            got = call(swiglu, x.clone(), mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach(),
                       mlp.down_proj.weight.detach())
            problem = compare("swiglu(x, w_gate, w_up, w_down)", got, mlp(x).detach(), atol=1e-8)
            if problem:
                return problem + f" (trial {t}, d_model={d}, d_ff={h}; weights are (out, in) like nn.Linear)"
        return None
    return run_check("SwiGLU MLP", trial)
