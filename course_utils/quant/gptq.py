"""GPTQ (Frantar et al. 2022): quantize a weight matrix one input column at a time and move each column's rounding
error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's squared output error.

For a linear layer y = W x the error ||W X - Ŵ X||² has Hessian H = 2 X Xᵀ / N per output row (X: calibration
inputs). Optimal Brain Surgeon: after rounding column q to ŵ_q, the best update of the remaining columns F is
    W[:, F] -= (w_q - ŵ_q) / [H_F⁻¹]_qq · [H_F⁻¹]_q,F
GPTQ's three tricks: all rows share one column order (so H_F⁻¹ is shared), the rows of the Cholesky factor of H⁻¹
give every H_F⁻¹ row at once, and updates are applied lazily per block of columns.
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_number, check_tensor
from .rtn import _check


def input_hessian(x: torch.Tensor) -> torch.Tensor:
    """H = 2 Xᵀ X / N (in, in) in float64 from calibration inputs x (N, in) (or (..., in))."""
    check_tensor("x", x, min_dim=2, floating=True)
    x = x.reshape(-1, x.shape[-1]).double()
    return 2 * x.T @ x / x.shape[0]


def _absmax_scale(cols: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-row scale (out, 1) of the columns that share it."""
    return (cols.abs().amax(dim=1, keepdim=True) / qmax).clamp(min=torch.finfo(torch.float32).tiny)


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int | None = None,
                  damp: float = 0.01, block_size: int = 128) -> torch.Tensor:
    """Ŵ (out, in), float32, on quantize_absmax's grid (a group's scale is taken when its first column is reached,
    from the weights as updated so far, as in the reference implementation).

    hessian: (in, in), e.g. input_hessian(x). damp: fraction of the mean diagonal added to it (numerical safety).
    block_size: columns per lazy-update block (rounded to a multiple of group_size).
    """
    _check(w, bits, group_size)
    if group_size == -1:
        raise ValueError("group_size must be None (per row) or a positive int for GPTQ, got -1")
    check_tensor("hessian", hessian, dims=2, floating=True)
    n_in = w.shape[1]
    if tuple(hessian.shape) != (n_in, n_in):
        raise ValueError(f"hessian must have shape ({n_in}, {n_in}) for w {tuple(w.shape)}, got {tuple(hessian.shape)}")
    check_number("damp", damp, 0, low_open=True)
    check_int("block_size", block_size)
    if group_size is not None:
        block_size = group_size * max(1, block_size // group_size)
    qmax = 2 ** (bits - 1) - 1
    W = w.detach().double().clone()
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0  # inputs that are always zero: their weights do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.diag(H).mean() * torch.eye(n_in, dtype=H.dtype)
    # upper Cholesky factor U of H⁻¹: row q of U / U[q, q] is row q of H_F⁻¹ with F = columns q..end
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    scale = _absmax_scale(W, qmax) if group_size is None else None
    Q = torch.zeros_like(W)
    for start in range(0, n_in, block_size):
        end = min(start + block_size, n_in)
        W1, err = W[:, start:end].clone(), torch.zeros(W.shape[0], end - start, dtype=W.dtype)
        for i in range(end - start):
            if group_size is not None and (start + i) % group_size == 0:
                scale = _absmax_scale(W1[:, i:i + group_size], qmax)
            col, d = W1[:, i], U[start + i, start + i]
            q = torch.round(col / scale[:, 0]).clamp(-qmax, qmax) * scale[:, 0]
            Q[:, start + i] = q
            err[:, i] = (col - q) / d
            W1[:, i:] -= err[:, i:i + 1] * U[start + i, start + i:end]
        W[:, end:] -= err @ U[start:end, end:]  # the block's errors reach the later columns at once
    return Q.float()
