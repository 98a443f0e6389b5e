"""Mamba's selective state-space layer (S6) from scratch: the scan (recurrent and quadratic forms), the mixer, and
the size of its decode-time state.

Names follow transformers' MambaMixer (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) so its state_dict loads
directly. Shapes: b batch, T tokens, H d_model, E d_inner = expand·H, N d_state, R dt_rank, K d_conv.
Papers: Gu & Dao 2023, arXiv:2312.00752 (Mamba); Dao & Gu 2024, arXiv:2405.21060 (Mamba-2, state-space duality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_number, check_tensor

# ---------------------------------------------------------------------------------------------------------------
# the selective scan: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t,  y_t = C_t·h_t + D x_t  (per channel e)


def selective_scan(x, delta, A, B, C, D=None, initial_state=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrent form, one token at a time: O(T) steps, a state of constant size (b, E, N).

    x, delta (b, T, E); A (E, N); B, C (b, T, N); D (E,) or None; initial_state (b, E, N) or None (zeros).
    Discretization as in Mamba: Ā = exp(Δ A), B̄ x = Δ B x. Returns (y (b, T, E), last state h_T (b, E, N)).
    """
    batch, T, E, N = _check_scan(x, delta, A, B, C, D, initial_state)
    dA = torch.exp(delta[..., None] * A)  # (b, T, E, N): Ā_t
    dBx = (delta * x)[..., None] * B[:, :, None, :]  # (b, T, E, N): B̄_t x_t
    h = x.new_zeros(batch, E, N) if initial_state is None else initial_state
    ys = []
    for t in range(T):
        h = dA[:, t] * h + dBx[:, t]  # (b, E, N)
        ys.append((h @ C[:, t, :, None])[..., 0])  # (b, E): C_t·h_t
    y = torch.stack(ys, dim=1)  # (b, T, E)
    return (y if D is None else y + x * D), h


def ssm_matrix(delta, A, B, C) -> torch.Tensor:
    """M (b, E, T, S), M[t, s] = C_t·(Π_{r=s+1..t} Ā_r) B̄_s for s <= t, else 0: y = M x, one matrix per channel.

    The products are exp of differences of cumulative sums of Δ·A (log decays), masked causally before exp.
    delta (b, T, E), A (E, N), B, C (b, T, N).
    """
    _check_scan(delta, delta, A, B, C, None, None, x_name="delta")
    log_decay = torch.cumsum(delta[..., None] * A, dim=1)  # (b, T, E, N): L_t = Σ_{r<=t} Δ_r A
    seg = log_decay[:, :, None] - log_decay[:, None, :]  # (b, T, S, E, N): L_t - L_s = log Π_{r=s+1..t} Ā_r
    T = delta.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=delta.device).tril()  # (T, S)
    decay = seg.masked_fill(~causal[:, :, None, None], float("-inf")).exp()  # (b, T, S, E, N); s > t -> 0
    M = torch.einsum("btn,btsen,bsn->btse", C, decay, B) * delta[:, None]  # (b, T, S, E): B̄_s = Δ_s B_s
    return M.permute(0, 3, 1, 2)  # (b, E, T, S)


def selective_scan_parallel(x, delta, A, B, C, D=None, initial_state=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The quadratic (attention-like) view of selective_scan: y = M x with M from ssm_matrix, all tokens at once.

    Same arguments and outputs as selective_scan; O(T²·E·N) memory. Mamba-2's state-space duality (Dao & Gu 2024,
    arXiv:2405.21060) makes A a scalar per head, so M becomes a masked attention matrix: (C Bᵀ) ∘ decay mask.
    """
    batch, T, E, N = _check_scan(x, delta, A, B, C, D, initial_state)
    M = ssm_matrix(delta, A, B, C)  # (b, E, T, S)
    y = torch.einsum("bets,bse->bte", M, x)  # (b, T, E)
    log_decay = torch.cumsum(delta[..., None] * A, dim=1)  # (b, T, E, N)
    to_end = torch.exp(log_decay[:, -1:] - log_decay)  # (b, T, E, N): Π_{r=s+1..T} Ā_r
    h = torch.einsum("bsen,bsn,bse->ben", to_end, B, delta * x)  # (b, E, N)
    if initial_state is not None:
        y = y + torch.einsum("btn,bten,ben->bte", C, log_decay.exp(), initial_state)  # h_0 decayed to each t
        h = h + log_decay[:, -1].exp() * initial_state
    return (y if D is None else y + x * D), h


# ---------------------------------------------------------------------------------------------------------------
# the mixer (the layer that replaces attention in a Mamba block) with its constant-size decoding cache


@dataclass
class MambaCache:
    """One mixer's decoding state: conv_state (b, E, K), the last K conv inputs; ssm_state (b, E, N), h_t."""

    conv_state: torch.Tensor
    ssm_state: torch.Tensor

    def nbytes(self) -> int:
        return self.conv_state.nbytes + self.ssm_state.nbytes


class MambaMixer(nn.Module):
    """Mamba's mixer: in_proj -> causal depthwise conv -> SiLU -> selective scan (Δ, B, C from x) -> gate -> out_proj.

    forward(hidden_states (b, T, H), cache=None) -> (b, T, H); with a cache it continues from it and updates it.
    step(hidden_state (b, H), cache) -> (b, H): one token, updating the cache in place of its tensors.
    dt_rank "auto" = ceil(H / 16); use_conv_bias, use_bias as in transformers' MambaConfig.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank="auto", *,
                 use_conv_bias: bool = True, use_bias: bool = False):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_state", d_state)
        check_int("d_conv", d_conv)
        check_int("expand", expand)
        if dt_rank != "auto":
            check_int("dt_rank", dt_rank, allowed="a positive int or 'auto' (ceil(d_model / 16))")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = E = expand * d_model
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.in_proj = nn.Linear(d_model, 2 * E, bias=use_bias)  # -> x and the gate z
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=use_conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)  # -> Δ (low rank), B, C
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))  # A = -exp(A_log) = -(1..N): S4D-real init
        self.out_proj = nn.Linear(E, d_model, bias=use_bias)
        with torch.no_grad():  # Δ = softplus(dt_proj bias) starts log-uniform in [1e-3, 1e-1], as in the paper
            nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def empty_cache(self, batch: int = 1) -> MambaCache:
        """Zero states for `batch` sequences, in the parameters' dtype and device."""
        check_int("batch", batch)
        w = self.A_log
        return MambaCache(w.new_zeros(batch, self.d_inner, self.d_conv), w.new_zeros(batch, self.d_inner, self.d_state))

    def _ssm_inputs(self, x: torch.Tensor):
        """x (..., E) after conv and SiLU -> Δ (..., E), A (E, N), B, C (..., N)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), -torch.exp(self.A_log), B, C  # dt_proj's bias is inside the softplus

    def forward(self, hidden_states: torch.Tensor, cache: MambaCache | None = None) -> torch.Tensor:
        check_tensor("hidden_states", hidden_states, dims=3, floating=True)
        b, T, H = hidden_states.shape
        if H != self.d_model or T == 0:
            raise ValueError(f"hidden_states must have shape (b, T >= 1, {self.d_model}), got {(b, T, H)}")
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # (b, T, E) each
        x = x.transpose(1, 2)  # (b, E, T)
        if cache is None:
            x = self.conv1d(x)[..., :T]  # (b, E, T): zero padding on the left, the right overhang cut off
        else:
            self._check_cache(cache, b)
            x = torch.cat([cache.conv_state, x], dim=-1)  # (b, E, K + T): the past inputs instead of zeros
            cache.conv_state = x[..., -self.d_conv:]  # (b, E, K)
            x = F.conv1d(x, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)[..., -T:]  # (b, E, T)
        x = F.silu(x.transpose(1, 2))  # (b, T, E)
        delta, A, B, C = self._ssm_inputs(x)
        y, h = selective_scan(x, delta, A, B, C, self.D, None if cache is None else cache.ssm_state)
        if cache is not None:
            cache.ssm_state = h
        return self.out_proj(y * F.silu(z))

    def step(self, hidden_state: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        """Decode one token: O(1) in the position, the cache keeps its shapes. hidden_state (b, H) -> (b, H)."""
        check_tensor("hidden_state", hidden_state, dims=2, floating=True)
        if hidden_state.shape[1] != self.d_model:
            raise ValueError(f"hidden_state must have shape (b, {self.d_model}), got {tuple(hidden_state.shape)}")
        self._check_cache(cache, hidden_state.shape[0])
        x, z = self.in_proj(hidden_state).chunk(2, dim=-1)  # (b, E) each
        cache.conv_state = torch.cat([cache.conv_state[..., 1:], x[..., None]], dim=-1)  # (b, E, K), newest last
        x = (cache.conv_state * self.conv1d.weight[:, 0]).sum(-1)  # (b, E): the conv at the newest position
        x = F.silu(x if self.conv1d.bias is None else x + self.conv1d.bias)
        delta, A, B, C = self._ssm_inputs(x)  # (b, E), (E, N), (b, N), (b, N)
        h = torch.exp(delta[..., None] * A) * cache.ssm_state + (delta * x)[..., None] * B[:, None]  # (b, E, N)
        cache.ssm_state = h
        y = (h @ C[..., None])[..., 0] + self.D * x  # (b, E)
        return self.out_proj(y * F.silu(z))

    def _check_cache(self, cache, batch: int) -> None:
        if not isinstance(cache, MambaCache):
            raise TypeError(f"cache must be a MambaCache (see MambaMixer.empty_cache), got {type(cache).__name__}")
        want = ((batch, self.d_inner, self.d_conv), (batch, self.d_inner, self.d_state))
        got = (tuple(cache.conv_state.shape), tuple(cache.ssm_state.shape))
        if got != want:
            raise ValueError(f"cache must hold conv_state {want[0]} and ssm_state {want[1]}, got {got[0]} and {got[1]}")


def ssm_state_bytes(n_layers: int, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, batch: int = 1,
                    bytes_per_value: float = 2) -> int:
    """Bytes of a Mamba model's decoding state: layers × batch × E × (N + K) × bytes, E = expand·d_model.

    No sequence length: compare with attention.kv_cache_bytes, which grows with every token.
    """
    for name, val in (("n_layers", n_layers), ("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv),
                      ("expand", expand), ("batch", batch)):
        check_int(name, val)
    check_number("bytes_per_value", bytes_per_value, 0, low_open=True,
                 allowed="a positive number (2 for bf16, 4 for fp32)")
    return int(n_layers * batch * expand * d_model * (d_state + d_conv) * bytes_per_value)


# ---------------------------------------------------------------------------------------------------------------
# checks


def _check_scan(x, delta, A, B, C, D, initial_state, x_name="x") -> tuple[int, int, int, int]:
    """Validate the scan's arguments; return (batch, T, E, N)."""
    for name, t, dims in ((x_name, x, 3), ("delta", delta, 3), ("A", A, 2), ("B", B, 3), ("C", C, 3)):
        check_tensor(name, t, dims=dims, floating=True)
    batch, T, E = x.shape
    N = A.shape[1]
    if T == 0:
        raise ValueError(f"{x_name} must have shape (batch, T, E) with T >= 1, got {tuple(x.shape)}")
    expected = {"delta": (delta, (batch, T, E)), "A": (A, (E, N)), "B": (B, (batch, T, N)), "C": (C, (batch, T, N))}
    if D is not None:
        expected["D"] = (check_tensor("D", D, dims=1, floating=True), (E,))
    if initial_state is not None:
        expected["initial_state"] = (check_tensor("initial_state", initial_state, dims=3, floating=True),
                                     (batch, E, N))
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (batch, T, E from {x_name}; N from A), "
                             f"got {tuple(t.shape)}")
    return batch, T, E, N
