"""Normalization and the FFN: BatchNorm/LayerNorm/RMSNorm from scratch, activations, SwiGLU, and norm placement.

Names follow transformers (RMSNorm, gate_proj/up_proj/down_proj) so weights can be copied from Qwen3 layers.
Papers: Ioffe & Szegedy 2015 (BatchNorm), Ba et al. 2016 (LayerNorm), Zhang & Sennrich 2019 (RMSNorm),
Xiong et al. 2020 (pre- vs post-LN), Ding et al. 2021 (sandwich, CogView), Wang et al. 2022 (DeepNorm),
Shazeer 2020 (GLU variants / SwiGLU).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_choice, check_int, check_number


# ---------------------------------------------------------------------------------------------------------
# the three norms

# Which axes of a (batch, tokens, features) tensor each norm averages over.
NORM_AXES = {"BatchNorm": (0, 1), "LayerNorm": (2,), "RMSNorm": (2,)}


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim. x (..., d) -> (..., d)."""

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.d, self.eps = _check_d_eps(d, eps)
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x):
        if x.shape[-1] != self.d:
            raise ValueError(f"x's last dim must be d={self.d}, got {x.shape[-1]}")
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance, as torch.nn.LayerNorm
        out = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return out + self.bias if self.bias is not None else out


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 like Qwen3RMSNorm. (..., d)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.d, self.eps = _check_d_eps(d, eps)
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        if x.shape[-1] != self.d:
            raise ValueError(f"x's last dim must be d={self.d}, got {x.shape[-1]}")
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class BatchNorm(nn.Module):
    """Per-feature norm over batch and tokens; running statistics in train mode, used in eval mode.

    x (B, T, d) -> (B, T, d). Same numbers as torch.nn.BatchNorm1d(d) applied to x.transpose(1, 2).
    """

    def __init__(self, d: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.d, self.eps = _check_d_eps(d, eps)
        check_number("momentum", momentum, 0, 1, low_open=True)
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_var", torch.ones(d))

    def forward(self, x):
        if x.dim() != 3 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (B, T, d={self.d}), got {tuple(x.shape)}")
        if self.training:
            mean = x.mean((0, 1))  # (d,)
            var = x.var((0, 1), unbiased=False)  # (d,)
            n = x.shape[0] * x.shape[1]
            with torch.no_grad():  # the running variance uses the unbiased estimate, as torch does
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


NORMS: dict[str, Callable[[int, float], nn.Module]] = {
    "layer": lambda d, eps: LayerNorm(d, eps),
    "rms": lambda d, eps: RMSNorm(d, eps),
}


# ---------------------------------------------------------------------------------------------------------
# activations and the FFN

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ReLU": F.relu,
    "Leaky ReLU": lambda x: F.leaky_relu(x, 0.1),
    "GELU": F.gelu,
    "SiLU / Swish": F.silu,
    "ELU": F.elu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def activation_curves(x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (f(x), f'(x))} for every activation, derivatives by autograd. x (N,) -> each (N,)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise TypeError("x must be a 1-D torch.Tensor")
    out = {}
    for name, fn in ACTIVATIONS.items():
        xg = x.detach().float().clone().requires_grad_(True)
        y = fn(xg)
        (grad,) = torch.autograd.grad(y.sum(), xg)
        out[name] = (y.detach(), grad)
    return out


class FFN(nn.Module):
    """Classic position-wise FFN: down_proj(act(up_proj(x))). (..., d_model) -> (..., d_model)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "ReLU", bias: bool = False):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        check_choice("activation", activation, list(ACTIVATIONS))
        self.act = ACTIVATIONS[activation]
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        return self.down_proj(self.act(self.up_proj(x)))


class SwiGLUMLP(nn.Module):
    """Gated FFN of LLaMA/Qwen: down_proj(silu(gate_proj(x)) * up_proj(x)). (..., d_model) -> (..., d_model)."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


SwiGLU = SwiGLUMLP


def swiglu_hidden_size(d_model: int, multiple_of: int = 1) -> int:
    """2/3 * 4 * d_model rounded up to `multiple_of`: SwiGLU's 3 matrices then hold as many weights as a 4d FFN's 2."""
    check_int("d_model", d_model)
    check_int("multiple_of", multiple_of)
    h = int(2 * 4 * d_model / 3)
    return multiple_of * math.ceil(h / multiple_of)


def count_params(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------
# where the norm goes: one Block, placements as a dict of functions with one signature


class CausalSelfAttention(nn.Module):
    """Minimal multi-head causal self-attention (q/k/v/o_proj, torch SDPA). (B, T, d) -> (B, T, d).

    gated=True multiplies the attention output by sigmoid(gate_proj(x)) element by element before o_proj (the
    query-dependent "G1" gate of Qiu et al. 2025, arXiv:2505.06708, as in transformers' Qwen3-Next attention).
    keep_weights=True makes the next forwards compute the weights explicitly and keep them in `weights` (B, H, T, T).
    """

    def __init__(self, d_model: int, n_heads: int, gated: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.gate_proj = nn.Linear(d_model, d_model, bias=False) if gated else None
        self.keep_weights, self.weights, self.last_gate = False, None, None

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (p(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.keep_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            self.weights = scores.masked_fill(~causal, float("-inf")).softmax(-1).detach()
            out = self.weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, -1)  # (B, T, d)
        if self.gate_proj is not None:
            gate = torch.sigmoid(self.gate_proj(x))  # (B, T, d), one gate per output element
            self.last_gate = gate.detach()
            out = out * gate
        return self.o_proj(out)


def _pre(b, x):
    x = x + b.attn(b.norm1(x))
    return x + b.mlp(b.norm2(x))


def _post(b, x):
    x = b.norm1(x + b.attn(x))
    return b.norm2(x + b.mlp(x))


def _sandwich(b, x):
    x = x + b.norm1_out(b.attn(b.norm1(x)))
    return x + b.norm2_out(b.mlp(b.norm2(x)))


def _deepnorm(b, x):
    x = b.norm1(b.alpha * x + b.attn(x))
    return b.norm2(b.alpha * x + b.mlp(x))


NORM_POSITIONS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "post": _post,  # original Transformer: norm after the residual add
    "pre": _pre,  # GPT-2 / LLaMA: norm on the branch input, the residual stream is never normalized
    "sandwich": _sandwich,  # pre-norm plus a norm on the branch output (CogView, Gemma 2)
    "deepnorm": _deepnorm,  # post-norm with the residual scaled by alpha and branch init scaled by beta
}


def deepnorm_constants(n_layers: int) -> tuple[float, float]:
    """DeepNorm (alpha, beta) for a decoder-only stack of n_layers blocks: ((2N)^(1/4), (8N)^(-1/4))."""
    check_int("n_layers", n_layers)
    return (2 * n_layers) ** 0.25, (8 * n_layers) ** -0.25


class Block(nn.Module):
    """Transformer block (causal attention + SwiGLU MLP) with the norm at `norm_position`. (B, T, d) -> (B, T, d).

    norm_position: "post" | "pre" | "sandwich" | "deepnorm"; norm: "rms" | "layer";
    n_layers: stack depth (only DeepNorm uses it for alpha and beta); gated: sigmoid gate on the attention output.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, norm_position: str = "pre",
                 norm: str = "rms", eps: float = 1e-6, n_layers: int = 1, gated: bool = False):
        super().__init__()
        check_choice("norm_position", norm_position, list(NORM_POSITIONS))
        check_choice("norm", norm, list(NORMS))
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        self.norm_position = norm_position
        self.attn = CausalSelfAttention(d_model, n_heads, gated)
        self.mlp = SwiGLUMLP(d_model, d_ff or swiglu_hidden_size(d_model))
        self.norm1, self.norm2 = NORMS[norm](d_model, eps), NORMS[norm](d_model, eps)
        if norm_position == "sandwich":
            self.norm1_out, self.norm2_out = NORMS[norm](d_model, eps), NORMS[norm](d_model, eps)
        self.alpha = 1.0
        if norm_position == "deepnorm":
            self.alpha, beta = deepnorm_constants(n_layers)
            with torch.no_grad():  # Xavier-normal init scaled by beta on v, o and the FFN (Wang et al. 2022)
                for lin in (self.attn.v_proj, self.attn.o_proj, self.mlp.gate_proj, self.mlp.up_proj, self.mlp.down_proj):
                    nn.init.xavier_normal_(lin.weight, gain=beta)
                for lin in (self.attn.q_proj, self.attn.k_proj):
                    nn.init.xavier_normal_(lin.weight, gain=1.0)

    def forward(self, x):
        return NORM_POSITIONS[self.norm_position](self, x)


class TinyLM(nn.Module):
    """A small decoder-only LM of `Block`s with learned positions, for norm-placement experiments.

    input_ids (B, T) -> logits (B, T, V). Pre and sandwich stacks get a final norm (post/DeepNorm end in one).
    embed_std: std of the token and position embeddings at initialization (linear layers keep PyTorch's default).
    gated: every block's attention output goes through a sigmoid gate (CausalSelfAttention).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 6, n_heads: int = 4,
                 norm_position: str = "pre", norm: str = "layer", max_len: int = 256, embed_std: float = 0.02,
                 gated: bool = False):
        super().__init__()
        check_int("vocab_size", vocab_size, 2)
        check_int("n_layers", n_layers)
        check_int("max_len", max_len)
        check_number("embed_std", embed_std, 0, low_open=True, finite=True)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embed.weight, std=embed_std)  # GPT-2 style 0.02; 1.0 = unit-variance embeddings
        nn.init.normal_(self.pos.weight, std=embed_std)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, norm_position=norm_position, norm=norm,
                                          n_layers=n_layers, gated=gated) for _ in range(n_layers))
        self.final_norm = NORMS[norm](d_model, 1e-6) if norm_position in ("pre", "sandwich") else nn.Identity()
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, input_ids):
        T = input_ids.shape[1]
        x = self.embed(input_ids) + self.pos(torch.arange(T, device=input_ids.device))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits (B, T, V), input_ids (B, T) -> scalar."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


def block_grad_norms(model: TinyLM) -> list[float]:
    """L2 norm of the gradient of each block's parameters (after a backward pass), first block first."""
    norms = []
    for block in model.blocks:
        sq = sum(p.grad.pow(2).sum() for p in block.parameters() if p.grad is not None)
        norms.append(float(torch.as_tensor(sq).sqrt()))
    return norms


def grad_norms_at_init(norm_position: str, n_layers: int, rows: torch.Tensor, vocab_size: int, *,
                       d_model: int = 64, n_heads: int = 4, seed: int = 0, embed_std: float = 0.02) -> list[float]:
    """Per-block gradient norms of a freshly initialized TinyLM on one batch rows (B, T) of token ids."""
    torch.manual_seed(seed)
    model = TinyLM(vocab_size, d_model, n_layers, n_heads, norm_position, max_len=rows.shape[1], embed_std=embed_std)
    lm_loss(model(rows), rows).backward()
    return block_grad_norms(model)


def train_tiny_lm(norm_position: str, rows: torch.Tensor, vocab_size: int, *, steps: int, lr: float,
                  warmup: int = 0, n_layers: int = 6, d_model: int = 64, n_heads: int = 4, batch_size: int = 8,
                  seed: int = 0, return_model: bool = False, norm: str = "layer", gated: bool = False):
    """Train a TinyLM with Adam (linear warm-up over `warmup` steps, then constant lr); per-step losses.

    rows: (N, T) token ids sampled with a seeded generator. A loss that turns NaN ends the run (reported as NaN).
    norm and gated are passed to TinyLM.
    Returns the losses, or (losses, trained model) with return_model=True.
    """
    check_int("steps", steps)
    check_int("warmup", warmup, 0)
    check_number("lr", lr, 0, low_open=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TinyLM(vocab_size, d_model, n_layers, n_heads, norm_position, norm, max_len=rows.shape[1], gated=gated)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    losses = []
    for _ in range(steps):
        batch = rows[torch.randint(len(rows), (batch_size,), generator=gen)]  # (B, T)
        loss = lm_loss(model(batch), batch)
        if not torch.isfinite(loss):
            losses += [float("nan")] * (steps - len(losses))
            break
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return (losses, model.eval()) if return_model else losses


@torch.no_grad()
def residual_updates(model: TinyLM, rows: torch.Tensor) -> dict[str, list[float]]:
    """How much each block changes the residual stream x (B, T, d), averaged over the tokens of rows (B, T).

    Returns {"relative_change": ||x_out - x_in|| / ||x_in|| per block, "cosine": cos(x_in, x_out) per block}.
    A block whose output is nearly its input (cosine near 1) adds little depth: the "effective depth" argument
    about pre-norm (e.g. Liu et al. 2020, Sec. 4; the notes' claim).
    """
    T = rows.shape[1]
    x = model.embed(rows) + model.pos(torch.arange(T, device=rows.device))  # (B, T, d)
    stats = {"relative_change": [], "cosine": []}
    for block in model.blocks:
        out = block(x)
        stats["relative_change"].append(((out - x).norm(dim=-1) / x.norm(dim=-1)).mean().item())
        stats["cosine"].append(F.cosine_similarity(out, x, dim=-1).mean().item())
        x = out
    return stats


# ---------------------------------------------------------------------------------------------------------
# argument checks


def _check_d_eps(d, eps) -> tuple[int, float]:
    """A norm's feature count d and its eps, as (int, float)."""
    return check_int("d", d, allowed=">= 1"), check_number("eps", eps, 0, low_open=True, allowed="> 0")
