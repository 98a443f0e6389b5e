"""Round-to-nearest (RTN) integer grids: symmetric absmax and asymmetric zero-point, per tensor, per output row or
per group of `group_size` consecutive inputs of a row.

A weight matrix w is (out_features, in_features), as in nn.Linear. Its scales are (out, 1) per row,
(out, in / group_size) per group, or (1, 1) per tensor (group_size=-1).
absmax:     codes = round(w / s) in [-(2^(b-1) - 1), 2^(b-1) - 1],  s = max|w| / (2^(b-1) - 1)  (bitsandbytes' int8)
zero-point: codes = round(w / s) + z in [0, 2^b - 1],  s = (max - min) / (2^b - 1),  z = round(-min / s)
Reference: Dettmers et al. 2022 (LLM.int8(), §2 absmax and zero-point quantization).
"""

from __future__ import annotations

import torch

from ..checks import check_int, check_tensor


def _check(w, bits: int, group_size) -> None:
    check_tensor("w", w, dims=2, floating=True)
    check_int("bits", bits, 2, 8)
    if group_size is not None and group_size != -1:
        check_int("group_size", group_size, allowed="None (per row), -1 (per tensor) or a positive int")
        if w.shape[1] % group_size:
            raise ValueError(f"group_size must divide in_features={w.shape[1]}, got {group_size}")


def _grouped(w: torch.Tensor, group_size) -> torch.Tensor:
    """(out, in) -> (rows, group) where each row shares one scale."""
    if group_size is None:
        return w
    if group_size == -1:
        return w.reshape(1, -1)
    return w.reshape(-1, group_size)


def _scale_shape(w: torch.Tensor, group_size) -> tuple[int, int]:
    if group_size is None:
        return (w.shape[0], 1)
    if group_size == -1:
        return (1, 1)
    return (w.shape[0], w.shape[1] // group_size)


def quantize_absmax(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric RTN: (codes int8 like w, scales float32 (out, 1) | (out, in/group_size) | (1, 1) for -1)."""
    _check(w, bits, group_size)
    qmax = 2 ** (bits - 1) - 1
    g = _grouped(w.float(), group_size)
    scales = (g.abs().amax(dim=1, keepdim=True) / qmax).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(g / scales).clamp(-qmax, qmax).to(torch.int8)
    return codes.reshape(w.shape), scales.reshape(_scale_shape(w, group_size))


def dequantize_absmax(codes: torch.Tensor, scales: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """codes * scale, back to a float32 (out, in) matrix."""
    check_tensor("codes", codes, dims=2)
    check_tensor("scales", scales, dims=2, floating=True)
    if tuple(scales.shape) != _scale_shape(codes, group_size):
        raise ValueError(f"scales must have shape {_scale_shape(codes, group_size)} for codes {tuple(codes.shape)} "
                         f"and group_size={group_size}, got {tuple(scales.shape)}")
    return (_grouped(codes.float(), group_size) * scales.reshape(-1, 1)).reshape(codes.shape)


def quantize_zeropoint(w: torch.Tensor, bits: int = 8, group_size: int | None = None):
    """Asymmetric RTN: (codes uint8 in [0, 2^bits - 1], scales, zero points), scales and zeros shaped as in absmax."""
    _check(w, bits, group_size)
    qmax = 2 ** bits - 1
    g = _grouped(w.float(), group_size)
    low, high = g.amin(dim=1, keepdim=True).clamp(max=0), g.amax(dim=1, keepdim=True).clamp(min=0)
    scales = ((high - low) / qmax).clamp(min=torch.finfo(torch.float32).tiny)
    zeros = torch.round(-low / scales)
    codes = (torch.round(g / scales) + zeros).clamp(0, qmax).to(torch.uint8)
    shape = _scale_shape(w, group_size)
    return codes.reshape(w.shape), scales.reshape(shape), zeros.reshape(shape)


def dequantize_zeropoint(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                         group_size: int | None = None) -> torch.Tensor:
    """(codes - zero) * scale, back to a float32 (out, in) matrix."""
    check_tensor("codes", codes, dims=2)
    for name, t in (("scales", scales), ("zeros", zeros)):
        check_tensor(name, t, dims=2, floating=True)
        if tuple(t.shape) != _scale_shape(codes, group_size):
            raise ValueError(f"{name} must have shape {_scale_shape(codes, group_size)}, got {tuple(t.shape)}")
    g = _grouped(codes.float(), group_size)
    return ((g - zeros.reshape(-1, 1)) * scales.reshape(-1, 1)).reshape(codes.shape)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> torch.Tensor:
    """Quantize then dequantize (the float matrix the quantized model computes with)."""
    if symmetric:
        return dequantize_absmax(*quantize_absmax(w, bits, group_size), group_size).to(w.dtype)
    return dequantize_zeropoint(*quantize_zeropoint(w, bits, group_size), group_size).to(w.dtype)


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w - w_hat||_F / ||w||_F."""
    w, w_hat = w.detach().float(), w_hat.detach().float()
    return float((w - w_hat).norm() / w.norm())
