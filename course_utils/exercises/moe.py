"""Lecture 04 (Mixture-of-Experts) exercise checks: top-k routing, load-balancing loss, capacity, parameters."""

from __future__ import annotations

from typing import Callable

import torch

from .. import moe
from .runner import call, compare, run_check


def _moe_dense_mixture(weights, index, n_experts: int) -> torch.Tensor:
    """(N, k) weights at (N, k) expert ids -> (N, E) mixture matrix, so the order of the k slots does not matter."""
    return torch.zeros(index.shape[0], n_experts, dtype=torch.float64).scatter_add_(1, index.long(), weights.double())


def check_top_k_routing(top_k_routing: Callable, trials: int = 4) -> None:
    """top_k_routing(router_logits (N, E), top_k) -> (weights (N, k), index (N, k)): softmax, keep top-k, renormalize."""
    def trial():
        gen = torch.Generator().manual_seed(404)
        for t in range(trials):
            n, e = int(torch.randint(3, 20, (1,), generator=gen)), int(torch.randint(2, 10, (1,), generator=gen))
            k = int(torch.randint(1, e + 1, (1,), generator=gen))
            logits = torch.randn(n, e, generator=gen) * (1 + 3 * t)
            out = call(top_k_routing, logits.clone(), k)
            if not isinstance(out, tuple) or len(out) != 2:
                return "return a tuple (weights, index)"
            w_ref, i_ref = moe.top_k_routing(logits, k)
            got = _moe_dense_mixture(*out, e) if out[1].shape == (n, k) else out[1]
            problem = compare("the (token, expert) weight matrix built from your (weights, index)", got,
                              _moe_dense_mixture(w_ref, i_ref, e), atol=1e-5)
            if problem:
                return problem + f" (trial {t}: {n} tokens, {e} experts, top_k={k}; index should be (N, k))"
        return None
    return run_check("top-k routing", trial)


def check_load_balancing_loss(load_balancing_loss: Callable, trials: int = 4) -> None:
    """load_balancing_loss(router_logits (N, E), n_experts, top_k) -> scalar, as transformers' Mixtral aux loss."""
    try:
        from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func as reference
    except ImportError:  # transformers missing: fall back to the course implementation (tested against it)
        reference = moe.load_balancing_loss

    def trial():
        gen = torch.Generator().manual_seed(405)
        for t in range(trials):
            n, e = int(torch.randint(5, 40, (1,), generator=gen)), int(torch.randint(2, 12, (1,), generator=gen))
            k = int(torch.randint(1, min(e, 4) + 1, (1,), generator=gen))
            logits = torch.randn(n, e, generator=gen) * 2
            got = call(load_balancing_loss, logits.clone(), e, k)
            got = torch.as_tensor(got, dtype=torch.float64).reshape(())
            ref = reference((logits,), e, k).double().reshape(())
            problem = compare("aux loss", got, ref, atol=1e-5)
            if problem and k > 1 and compare("", got, ref / k, atol=1e-5) is None:
                return problem + (f". Hint: your loss is the reference / top_k: f_e is the share of tokens routed to"
                                  f" expert e, divided by N only, so the f_e sum to top_k = {k}, not to 1.")
            if problem and compare("", got, ref / e, atol=1e-5) is None:
                return problem + ". Hint: multiply by n_experts (Switch's alpha * E * sum f_e P_e), so 1 is balanced."
            if problem:
                return problem + f" (trial {t}: {n} tokens, {e} experts, top_k={k})"
        return None
    return run_check("load-balancing loss (same value as transformers' Mixtral)", trial)


def check_capacity_keep_mask(capacity_keep_mask: Callable, trials: int = 4) -> None:
    """capacity_keep_mask(top_k_index (N, k), n_experts, capacity) -> keep (N, k) bool, first choices first."""
    def trial():
        gen = torch.Generator().manual_seed(406)
        for t in range(trials):
            n, e = int(torch.randint(4, 30, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen))
            k = int(torch.randint(1, e + 1, (1,), generator=gen))
            index = torch.rand(n, e, generator=gen).argsort(-1)[:, :k]  # k distinct experts per token
            cap = int(torch.randint(0, n, (1,), generator=gen))
            got = call(capacity_keep_mask, index.clone(), e, cap)
            if not isinstance(got, torch.Tensor) or got.dtype != torch.bool:
                return "return a bool tensor of shape (N, k)"
            problem = compare("keep mask", got.float(), moe.capacity_keep_mask(index, e, cap).float())
            if problem and compare("", got.float(), _token_major_keep(index, e, cap).float()) is None:
                return problem.replace("max_diff 1", "some assignments differ") + (
                    ". Hint: you filled the experts token by token (token 0's choices, then token 1's...); every"
                    " token's FIRST choice goes before any second choice (GShard, Switch), so loop over the choice"
                    " rank first.")
            if problem:
                return problem.replace("max_diff 1", "some assignments differ") + f" (trial {t}: capacity {cap})"
        return None
    return run_check("expert capacity: which assignments fit", trial)


def _token_major_keep(index: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """The common mistake: keep assignments in token order (all of token 0's choices, then token 1's, ...)."""
    count, keep = [0] * n_experts, torch.zeros(index.shape, dtype=torch.bool)
    for token in range(index.shape[0]):
        for rank in range(index.shape[1]):
            expert = int(index[token, rank])
            keep[token, rank] = count[expert] < capacity
            count[expert] += int(keep[token, rank])
    return keep


def check_active_params(moe_param_counts: Callable, trials: int = 4) -> None:
    """moe_param_counts(config: Mixtral-style dict) -> (total, active) ints; reference: the model built on meta."""
    def trial():
        gen = torch.Generator().manual_seed(407)
        configs = [dict(moe.MOE_MODELS["mistralai/Mixtral-8x7B-v0.1"])]
        for _ in range(trials - 1):
            heads = [2, 4, 8][int(torch.randint(0, 3, (1,), generator=gen))]
            kv = [h for h in (1, 2, 4, 8) if heads % h == 0][int(torch.randint(0, 2, (1,), generator=gen))]
            e = int(torch.randint(2, 9, (1,), generator=gen))
            configs.append(dict(
                model_type="mixtral", hidden_size=heads * 8,
                intermediate_size=int(torch.randint(8, 65, (1,), generator=gen)),
                num_hidden_layers=int(torch.randint(1, 4, (1,), generator=gen)), num_attention_heads=heads,
                num_key_value_heads=kv, vocab_size=int(torch.randint(50, 300, (1,), generator=gen)),
                num_local_experts=e, num_experts_per_tok=int(torch.randint(1, e + 1, (1,), generator=gen)),
                tie_word_embeddings=bool(torch.randint(0, 2, (1,), generator=gen))))
        for t, cfg in enumerate(configs):
            out = call(moe_param_counts, dict(cfg))
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                return "return a tuple (total, active)"
            ref = moe.count_moe_params(cfg)
            got = tuple(int(v) for v in out)
            if got != (ref.total, ref.active):
                what = "total" if got[0] != ref.total else "active"
                return (f"{what} is {got[0 if what == 'total' else 1]:,}, expected "
                        f"{ref.total if what == 'total' else ref.active:,} (trial {t}: "
                        f"{'Mixtral-8x7B' if t == 0 else cfg})")
        return None
    return run_check("total and active parameters of an MoE model", trial)
