"""Attention sinks and massive activations in a small decoder, with and without the attention-output gate.

An attention sink (Xiao et al. 2023, StreamingLLM, arXiv:2309.17453) is a key — usually the first token — that takes a
large share of many queries' attention whatever its content. Massive activations (Sun et al. 2024, arXiv:2402.17762)
are a few hidden-state entries, often at that same token, thousands of times larger than the median. Qiu et al. 2025
(arXiv:2505.06708) report that a sigmoid gate on the attention output removes both. Measured here on norms.TinyLM.
"""

from __future__ import annotations

import torch

from ..checks import check_int


@torch.no_grad()
def sink_statistics(model, rows: torch.Tensor, skip: int = 16) -> dict:
    """What a TinyLM does with its first token on rows (B, T) of token ids.

    Returns {"first_token_weight": (L, H) mean attention weight on key 0 from queries i >= skip,
    "uniform": the same mean for a uniform causal head (mean of 1/(i+1)), "massive_first" / "massive_rest": (L,)
    largest |hidden state| after each block at position 0 / at the other positions, each divided by the median
    |hidden state|, and "gate_mean": (L,) mean gate value (nan without a gate)}.
    """
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
        raise ValueError(f"rows must be a 2-D tensor of token ids (B, T), got {getattr(rows, 'shape', rows)}")
    T = rows.shape[1]
    check_int("skip", skip, 1, T - 1, allowed=f"an int in [1, T - 1 = {T - 1}]")
    attns = [block.attn for block in model.blocks]
    for a in attns:
        a.keep_weights = True
    try:
        model.eval()
        x = model.embed(rows) + model.pos(torch.arange(T, device=rows.device))  # (B, T, d)
        first, rest, gates = [], [], []
        for block in model.blocks:
            x = block(x)
            median = x.abs().median()
            first.append((x[:, 0].abs().amax() / median).item())
            rest.append((x[:, 1:].abs().amax() / median).item())
            gate = block.attn.last_gate
            gates.append(gate.mean().item() if gate is not None else float("nan"))
        weight = torch.stack([a.weights[:, :, skip:, 0].mean((0, 2)) for a in attns])  # (L, H)
    finally:
        for a in attns:
            a.keep_weights, a.weights = False, None
    uniform = (1.0 / torch.arange(skip + 1, T + 1, dtype=torch.float64)).mean().item()
    return {"first_token_weight": weight, "uniform": uniform, "massive_first": torch.tensor(first),
            "massive_rest": torch.tensor(rest), "gate_mean": torch.tensor(gates)}
