"""Activation outliers and the two W8A8 remedies.

Quantizing activations too (W8A8) lets the matmul run in int8, but a few input channels carry values 10-100x the
rest, and a per-tensor or per-token int8 grid sized for them rounds everything else to zero.
- LLM.int8() (Dettmers et al. 2022): input columns with any |x| >= threshold are multiplied in floating point, the
  rest in int8 with per-token (x) and per-output-row (w) absmax scales. Same split as bitsandbytes'
  int8_vectorwise_quant(x, threshold).
- SmoothQuant (Xiao et al. 2023): divide input channel j by s_j = max|x_j|^α / max|w_j|^(1-α) and multiply the
  weight column by it (x Wᵀ is unchanged), moving the difficulty from activations to weights.
x is (N, in) (tokens, input channels), w is (out, in).
"""

from __future__ import annotations

import torch

from ..checks import check_choice, check_number, check_tensor
from .rtn import fake_quantize


def _check_pair(x, w) -> None:
    check_tensor("x", x, dims=2, floating=True)
    check_tensor("w", w, dims=2, floating=True)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x has {x.shape[1]} input channels but w expects {w.shape[1]} (w is (out, in))")


def activation_absmax(x: torch.Tensor) -> torch.Tensor:
    """max |x| per input channel: (in,) from (N, in)."""
    check_tensor("x", x, min_dim=2, floating=True)
    return x.reshape(-1, x.shape[-1]).abs().amax(dim=0)


def fake_quantize_activations(x: torch.Tensor, bits: int = 8, granularity: str = "token") -> torch.Tensor:
    """Symmetric absmax round trip of activations (N, in), one scale per token (row) or per tensor."""
    check_tensor("x", x, dims=2, floating=True)
    check_choice("granularity", granularity, ("token", "tensor"))
    return fake_quantize(x, bits, None if granularity == "token" else -1)


def w8a8_matmul(x: torch.Tensor, w: torch.Tensor, granularity: str = "token") -> torch.Tensor:
    """x Wᵀ with int8 activations (per token or per tensor) and int8 weights (per output row): (N, out)."""
    _check_pair(x, w)
    return fake_quantize_activations(x, 8, granularity) @ fake_quantize(w, 8).T


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x Wᵀ (N, out) by the mixed-precision decomposition, indices of the outlier input columns kept in float)."""
    _check_pair(x, w)
    check_number("threshold", threshold, 0, low_open=True)
    outlier = (x.abs() >= threshold).any(dim=0)
    cols = outlier.nonzero().flatten()
    regular = ~outlier
    y = w8a8_matmul(x[:, regular], w[:, regular]) if regular.any() else x.new_zeros(x.shape[0], w.shape[0])
    return y + x[:, outlier] @ w[:, outlier].T, cols


def smoothquant_scales(x_absmax: torch.Tensor, w: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """s (in,) = max|x_j|^α / max|w_j|^(1-α); use x / s and w * s (per input channel j)."""
    check_tensor("x_absmax", x_absmax, dims=1, floating=True)
    check_tensor("w", w, dims=2, floating=True)
    if x_absmax.shape[0] != w.shape[1]:
        raise ValueError(f"x_absmax must have in_features={w.shape[1]} entries, got {x_absmax.shape[0]}")
    check_number("alpha", alpha, 0, 1)
    w_absmax = w.abs().amax(dim=0).clamp(min=1e-5)
    return (x_absmax.clamp(min=1e-5) ** alpha / w_absmax ** (1 - alpha)).clamp(min=1e-5)
