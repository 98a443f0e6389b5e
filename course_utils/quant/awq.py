"""AWQ (Lin et al. 2024, activation-aware weight quantization): scale input channel j of a weight matrix by
s_j = mean|x_j|^α before rounding and by 1/s_j after (a real kernel folds 1/s into the previous operation), so the
channels that see large activations get a finer grid. α is searched on calibration inputs to minimize the layer's
output error ||x Wᵀ - x Ŵᵀ||²; α = 0 is plain round-to-nearest.
Not reproduced: the paper's joint scales for layers sharing an input and its clipping-range search.
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_tensor
from .rtn import _check, fake_quantize


def awq_quantize(w: torch.Tensor, x: torch.Tensor, bits: int = 4, group_size: int | None = None,
                 n_grid: int = 20) -> tuple[torch.Tensor, float]:
    """(Ŵ (out, in) float32, the α chosen from {0, 1/n_grid, ..., 1 - 1/n_grid}) for inputs x (N, in)."""
    _check(w, bits, group_size)
    check_tensor("x", x, dims=2, floating=True)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x must have in_features={w.shape[1]} columns like w, got shape {tuple(x.shape)}")
    check_int("n_grid", n_grid)
    w, x = w.detach().float(), x.detach().float()
    mean_abs = x.abs().mean(dim=0).clamp(min=1e-8)
    reference = x @ w.T
    best = (float("inf"), None, 0.0)
    for k in range(n_grid):
        alpha = k / n_grid
        s = mean_abs ** alpha
        s = s / (s.max() * s.min()).sqrt()  # centre the scales around 1 (as the reference code does)
        w_hat = fake_quantize(w * s, bits, group_size) / s
        loss = float(((x @ w_hat.T - reference) ** 2).mean())
        if loss < best[0]:
            best = (loss, w_hat, alpha)
    return best[1], best[2]
