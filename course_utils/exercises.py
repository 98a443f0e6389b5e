"""Exercise checks: `check_*(your_function)` tests a student's function on fresh random inputs.

Each check prints one friendly line and returns True (passed) or False (wrong or not implemented yet);
it never raises, so an unfilled stub does not stop the notebook.
"""

from __future__ import annotations

from typing import Callable

import torch


def run_check(title: str, trial: Callable[[], str | None]) -> bool:
    """Run `trial()` (returns None when correct, else what went wrong) and print the verdict.

    A stub that raises NotImplementedError or returns None (`...`) reads as "not implemented yet".
    """
    try:
        problem = trial()
    except NotImplementedError:
        problem = "not implemented yet"
    except _StubReturnedNone:
        problem = "not implemented yet"
    except Exception as exc:  # a student's bug must be reported, not crash the notebook
        problem = f"your function raised {type(exc).__name__}: {exc}"
    if problem is None:
        print(f"PASS {title}")
        return True
    hint = "  (fill in the function above, then run this cell again)" if problem == "not implemented yet" else ""
    print(f"{'TODO' if hint else 'FAIL'} {title}: {problem}{hint}")
    return False


class _StubReturnedNone(Exception):
    pass


def call(fn: Callable, *args, **kwargs):
    """Call a student's function; a stub returning None is treated as not implemented."""
    out = fn(*args, **kwargs)
    if out is None:
        raise _StubReturnedNone
    return out


def compare(name: str, got, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> str | None:
    """None when `got` matches `expected` (shape and values), else a message with the max difference."""
    if not isinstance(got, torch.Tensor):
        return f"{name} should be a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    diff = (got.double() - expected.double()).abs()
    if not torch.all(diff <= atol + rtol * expected.double().abs()):
        return f"{name} differs from the reference: max_diff {diff.max().item():.3g}"
    return None


# ---- 00 setup: the demo exercise ------------------------------------------------------------------

def check_softmax(softmax: Callable[[torch.Tensor], torch.Tensor], trials: int = 5) -> bool:
    """softmax(x) over the last dim, stable for large logits; compared with float64 torch.softmax."""
    def trial():
        gen = torch.Generator().manual_seed(1234)
        for t in range(trials):
            shape = (int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(2, 9, (1,), generator=gen)))
            x = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + 30 * t)  # later trials: huge logits
            problem = compare("softmax(x)", call(softmax, x.clone()), torch.softmax(x, dim=-1), atol=1e-6)
            if problem:
                return problem + f" (trial {t}, logits up to {x.abs().max().item():.0f})"
        return None
    return run_check("softmax", trial)


# ---- 01 attention checks (issue 3) ----

def check_causal_attention(causal_attention: Callable, trials: int = 4) -> bool:
    """causal_attention(q, k, v) -> out (..., T, Dv): softmax(q kᵀ/sqrt(D)) v with a causal mask; vs float64 torch."""
    import torch.nn.functional as F

    def trial():
        gen = torch.Generator().manual_seed(101)
        for t in range(trials):
            B, H, T, D = 1 + t % 2, 1 + t, 2 + 3 * t, 4 * (t + 1)
            q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64) * (1 + 3 * t) for _ in range(3))
            expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            problem = compare("causal_attention(q, k, v)", call(causal_attention, q.clone(), k.clone(), v.clone()),
                              expected, atol=1e-6)
            if problem:
                return problem + f" (trial {t}, q of shape {tuple(q.shape)})"
        return None
    return run_check("causal attention", trial)


def check_repeat_kv(repeat_kv: Callable, trials: int = 4) -> bool:
    """repeat_kv(x (B, H_kv, S, D), n_rep) -> (B, H_kv·n_rep, S, D), KV head h serving query heads h·n_rep …"""
    def trial():
        gen = torch.Generator().manual_seed(202)
        for t, (h_kv, n_rep) in enumerate([(1, 1), (2, 2), (1, 4), (3, 2)][:trials]):
            x = torch.randn(2, h_kv, 5, 3, generator=gen)
            problem = compare(f"repeat_kv(x, {n_rep})", call(repeat_kv, x.clone(), n_rep),
                              torch.repeat_interleave(x, n_rep, dim=1), atol=0.0, rtol=0.0)
            if problem:
                hint = " (each KV head must be repeated n_rep times in a row: heads 0,0,1,1 not 0,1,0,1)"
                return problem + f" for H_kv={h_kv}, n_rep={n_rep}" + (hint if "differs" in problem else "")
        return None
    return run_check("repeat_kv", trial)


def check_sharpest_head(sharpest_head: Callable, trials: int = 3) -> bool:
    """sharpest_head(weights (L, H, T, S)) -> (entropy (L, H) mean over query rows in nats, (layer, head) of the
    lowest-entropy head). Causal weights contain exact zeros: 0·log 0 must count as 0."""
    def trial():
        gen = torch.Generator().manual_seed(303)
        for t in range(trials):
            L, H, T = 2 + t, 3 + t, 6
            logits = torch.randn(L, H, T, T, generator=gen, dtype=torch.float64)
            logits = logits * torch.rand(L, H, 1, 1, generator=gen, dtype=torch.float64) * 6  # sharp and diffuse
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            w = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
            expected = torch.special.entr(w).sum(-1).mean(-1)  # (L, H)
            got = call(sharpest_head, w.clone())
            if not isinstance(got, tuple) or len(got) != 2:
                return "return a pair (entropy grid, (layer, head))"
            problem = compare("entropy grid", got[0], expected, atol=1e-6)
            if problem:
                nan = isinstance(got[0], torch.Tensor) and bool(torch.isnan(got[0]).any())
                return problem + (" (NaN: 0·log 0 must be 0; see torch.special.entr)" if nan else "")
            idx = divmod(int(expected.argmin()), H)
            try:
                got_idx = tuple(int(x) for x in got[1])
            except (TypeError, ValueError):
                return f"the second item should be (layer, head), got {got[1]!r}"
            if got_idx != idx:
                return f"sharpest head should be (layer, head) = {idx}, got {got_idx}"
        return None
    return run_check("sharpest head", trial)


# ---- 02 norms checks (issue 4) ----

def check_rms_norm(rms_norm: Callable, trials: int = 4) -> bool:
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


def check_layer_norm(layer_norm: Callable, trials: int = 4) -> bool:
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


def check_swiglu(swiglu: Callable, trials: int = 3) -> bool:
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

# ---- 03 positional checks (issue 4) ----

def check_apply_rope(apply_rope: Callable, trials: int = 3) -> bool:
    """apply_rope(x, positions, inv_freq), x (..., T, D), rotate-half layout; compared with transformers."""
    def trial():
        from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

        gen = torch.Generator().manual_seed(301)
        for t in range(trials):
            D, T = 8 * (t + 1), 5 + t
            x = torch.randn(2, 3, T, D, generator=gen, dtype=torch.float64)
            positions = torch.randint(0, 2000, (T,), generator=gen)
            inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
            freqs = positions[:, None].double() * inv_freq  # (T, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
            ref, _ = apply_rotary_pos_emb(x, x, emb.cos()[None], emb.sin()[None])
            problem = compare("apply_rope(x, positions, inv_freq)", call(apply_rope, x.clone(), positions, inv_freq),
                              ref, atol=1e-8)
            if problem:
                return problem + f" (trial {t}, D={D}; pair i is (i, i + D/2), not (2i, 2i+1))"
        return None
    return run_check("apply_rope", trial)


def check_alibi_slopes(alibi_slopes: Callable) -> bool:
    """alibi_slopes(n_heads) for power-of-two and other head counts; compared with BLOOM's ALiBi tensor."""
    def trial():
        from transformers.models.bloom.modeling_bloom import build_alibi_tensor

        for n in (1, 4, 8, 6, 12, 20):
            ref = build_alibi_tensor(torch.ones(1, 3), n, torch.float32)[:, 0, 1]  # slope * position 1
            got = call(alibi_slopes, n)
            got = torch.as_tensor(got, dtype=torch.float32) if not isinstance(got, torch.Tensor) else got
            problem = compare(f"alibi_slopes({n})", got.float(), ref, atol=1e-6)
            if problem:
                return problem
        return None
    return run_check("ALiBi slopes", trial)


def check_ntk_inv_freq(ntk_inv_freq: Callable) -> bool:
    """ntk_inv_freq(head_dim, base, factor): NTK-aware RoPE frequencies (base * factor^(D/(D-2)))."""
    def trial():
        for head_dim, base, factor in [(64, 10000.0, 2.0), (128, 500000.0, 8.0), (16, 10000.0, 4.0)]:
            b = base * factor ** (head_dim / (head_dim - 2))
            ref = 1.0 / (b ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
            got = call(ntk_inv_freq, head_dim, base, factor)
            problem = compare(f"ntk_inv_freq({head_dim}, {base}, {factor})", got, ref, atol=0, rtol=1e-5)
            if problem:
                return problem
        return None
    return run_check("NTK-aware inverse frequencies", trial)

# ---- 04 moe checks (issue 5) ----

def _moe_dense_mixture(weights, index, n_experts: int) -> torch.Tensor:
    """(N, k) weights at (N, k) expert ids -> (N, E) mixture matrix, so the order of the k slots does not matter."""
    return torch.zeros(index.shape[0], n_experts, dtype=torch.float64).scatter_add_(1, index.long(), weights.double())


def check_top_k_routing(top_k_routing: Callable, trials: int = 4) -> bool:
    """top_k_routing(router_logits (N, E), top_k) -> (weights (N, k), index (N, k)): softmax, keep top-k, renormalize."""
    from . import moe

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


def check_load_balancing_loss(load_balancing_loss: Callable, trials: int = 4) -> bool:
    """load_balancing_loss(router_logits (N, E), n_experts, top_k) -> scalar, as transformers' Mixtral aux loss."""
    try:
        from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func as reference
    except ImportError:  # transformers missing: fall back to the course implementation (tested against it)
        from .moe import load_balancing_loss as reference

    def trial():
        gen = torch.Generator().manual_seed(405)
        for t in range(trials):
            n, e = int(torch.randint(5, 40, (1,), generator=gen)), int(torch.randint(2, 12, (1,), generator=gen))
            k = int(torch.randint(1, min(e, 4) + 1, (1,), generator=gen))
            logits = torch.randn(n, e, generator=gen) * 2
            got = call(load_balancing_loss, logits.clone(), e, k)
            got = torch.as_tensor(got, dtype=torch.float64).reshape(())
            problem = compare("aux loss", got, reference((logits,), e, k).double().reshape(()), atol=1e-5)
            if problem:
                return problem + f" (trial {t}: {n} tokens, {e} experts, top_k={k})"
        return None
    return run_check("load-balancing loss (same value as transformers' Mixtral)", trial)


def check_capacity_keep_mask(capacity_keep_mask: Callable, trials: int = 4) -> bool:
    """capacity_keep_mask(top_k_index (N, k), n_experts, capacity) -> keep (N, k) bool, first choices first."""
    from . import moe

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
            if problem:
                return problem.replace("max_diff 1", "some assignments differ") + f" (trial {t}: capacity {cap})"
        return None
    return run_check("expert capacity: which assignments fit", trial)


def check_active_params(moe_param_counts: Callable, trials: int = 4) -> bool:
    """moe_param_counts(config: Mixtral-style dict) -> (total, active) ints; reference: the model built on meta."""
    from . import moe

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

# ---- 05 decoding checks (issue 6) ----

def _same_filtered(name: str, got, expected: torch.Tensor) -> str | None:
    """None when got has -inf exactly where expected does and equal finite values."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return compare(name, got, expected)
    if not torch.equal(torch.isinf(got) & (got < 0), torch.isinf(expected) & (expected < 0)):
        wrong = (torch.isinf(got) != torch.isinf(expected)).sum().item()
        return f"{name} removes the wrong tokens ({wrong} entries differ in being -inf)"
    finite = torch.isfinite(expected)
    return compare(name + " (kept entries)", got[finite], expected[finite], atol=1e-5)


def check_top_p(top_p_filter: Callable, trials: int = 6) -> bool:
    """top_p_filter(logits (B, V), p) keeps the smallest set of top tokens with mass >= p; compared with transformers."""
    from transformers.generation.logits_process import TopPLogitsWarper

    def trial():
        gen = torch.Generator().manual_seed(505)
        for t in range(trials):
            logits = torch.randn(3, 5 + 20 * t, generator=gen) * (0.5 + t)
            p = [0.1, 0.5, 0.8, 0.9, 0.95, 1.0][t % 6]
            expected = TopPLogitsWarper(p)(None, logits.clone())
            problem = _same_filtered("top_p_filter(logits, p)", call(top_p_filter, logits.clone(), p), expected)
            if problem:
                return problem + f" (trial {t}, p={p}, V={logits.shape[1]})"
        return None
    return run_check("top-p (nucleus) filter", trial)


def check_repetition_penalty(apply_repetition_penalty: Callable, trials: int = 5) -> bool:
    """apply_repetition_penalty(logits (B, V), input_ids (B, L), penalty): the CTRL / transformers rule."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    def trial():
        gen = torch.Generator().manual_seed(506)
        for t in range(trials):
            logits = torch.randn(2, 30, generator=gen) * 3
            ids = torch.randint(0, 30, (2, 4 + 3 * t), generator=gen)
            penalty = [1.2, 2.0, 0.7, 1.5, 3.0][t % 5]
            expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
            got = call(apply_repetition_penalty, logits.clone(), ids.clone(), penalty)
            problem = compare("apply_repetition_penalty(...)", got, expected)
            if problem:
                return problem + f" (trial {t}, penalty={penalty}; hint: the sign of the logit matters)"
        return None
    return run_check("repetition penalty", trial)


def check_majority_vote(majority_vote: Callable) -> bool:
    """majority_vote(answers) -> most common non-None answer, ties to the one seen first, None if none valid."""
    cases = [(["4", "5", "4"], "4"), (["7"], "7"), ([None, "3", None, "2", "2"], "2"), (["a", "b", "b", "a"], "a"),
             (["9", None, "8", "8", "9", "8"], "8"), ([None, None], None)]

    def trial():
        for answers, expected in cases:
            got = call(majority_vote, list(answers)) if expected is not None else majority_vote(list(answers))
            if got != expected:
                return f"majority_vote({answers}) returned {got!r}, expected {expected!r}"
        return None
    return run_check("majority vote", trial)

# ---- 06 lora / memory checks (issue 7) ----

def check_lora_param_count(lora_param_count: Callable[[int, int, int], int], trials: int = 6) -> bool:
    """lora_param_count(d_in, d_out, r): parameters LoRA adds to one d_out x d_in weight (A is r x d_in, B d_out x r)."""
    def trial():
        gen = torch.Generator().manual_seed(606)
        cases = [(4096, 4096, 16), (4096, 1024, 8)]
        cases += [tuple(int(v) for v in torch.randint(1, 3000, (3,), generator=gen)) for _ in range(trials)]
        for d_in, d_out, r in cases:
            got, expected = call(lora_param_count, d_in, d_out, r), r * d_in + d_out * r
            if got != expected:
                return f"d_in={d_in}, d_out={d_out}, r={r}: got {got}, expected {expected}"
        return None
    return run_check("lora_param_count", trial)


def check_lora_forward(lora_forward: Callable, trials: int = 4) -> bool:
    """lora_forward(x, W0, A, B, alpha, r) -> x W0^T + (alpha/r) x A^T B^T; x (N, in), W0 (out, in), A (r, in), B (out, r)."""
    def trial():
        gen = torch.Generator().manual_seed(607)
        for t in range(trials):
            n, d_in, d_out, r = 3 + t, 8 + 4 * t, 5 + 3 * t, 1 + t
            x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
            w0 = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
            a = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
            b = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
            alpha = 2.0 * (t + 1)
            expected = x @ w0.T + (alpha / r) * (x @ a.T @ b.T)
            problem = compare("lora_forward(...)", call(lora_forward, x, w0, a, b, alpha, r), expected, atol=1e-9)
            if problem:
                return problem + f" (trial {t}: r={r}, alpha={alpha})"
        return None
    return run_check("lora_forward", trial)


def check_dequantize_nf4(dequantize: Callable, trials: int = 3) -> bool:
    """dequantize(codes, absmax, shape, blocksize) -> weights; compared with bitsandbytes' dequantize_4bit (NF4)."""
    from .lora import bitsandbytes_status

    usable, why = bitsandbytes_status()
    if not usable:  # the reference becomes course_utils.lora's NF4 (tests/test_lora.py: identical to bitsandbytes)
        print(f"note: comparing with course_utils.lora.dequantize_nf4, not bitsandbytes: {why}")

    def trial():
        from .lora import dequantize_nf4, quantize_nf4, unpack_4bit

        gen = torch.Generator().manual_seed(608)
        for t in range(trials):
            shape = (2 + t, 64 * (1 + t))
            w = torch.randn(shape, generator=gen) * (0.02 + t)
            if not usable:
                codes, absmax = quantize_nf4(w, blocksize=64)
                got = call(dequantize, codes, absmax.clone(), shape, 64)
                problem = compare("dequantize(...)", got, dequantize_nf4(codes, absmax, shape), atol=1e-6, rtol=1e-5)
                if problem:
                    return problem + f" (trial {t}, shape {shape})"
                continue
            import bitsandbytes.functional as bnbF

            packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
            codes = unpack_4bit(packed)  # one code (0..15) per weight
            got = call(dequantize, codes, state.absmax.clone(), shape, 64)
            problem = compare("dequantize(...)", got, bnbF.dequantize_4bit(packed, state), atol=1e-6, rtol=1e-5)
            if problem:
                return problem + f" (trial {t}, shape {shape})"
        return None
    return run_check("dequantize_nf4", trial)

# ---- 07 sft checks (issue 8) ----

def check_label_masking(mask_labels: Callable, trials: int = 5) -> bool:
    """mask_labels(input_ids (T,), assistant_mask (T,)) -> labels (T,): the id where the mask is 1, else -100."""
    def trial():
        gen = torch.Generator().manual_seed(807)
        for t in range(trials):
            T = int(torch.randint(4, 30, (1,), generator=gen))
            ids = torch.randint(0, 963, (T,), generator=gen)
            mask = (torch.rand(T, generator=gen) < 0.4).long()
            expected = torch.tensor([int(i) if m else -100 for i, m in zip(ids.tolist(), mask.tolist())])
            got = call(mask_labels, ids.clone(), mask.clone())
            got = torch.as_tensor(got)
            if got.shape != expected.shape or not torch.equal(got.long(), expected):
                bad = [k for k in range(T) if got.numel() != T or int(got.view(-1)[k]) != int(expected[k])]
                return f"labels wrong at positions {bad[:5]} (trial {t}): keep the id where the mask is 1, else -100"
        return None
    return run_check("label masking", trial)


def check_sft_loss(sft_loss: Callable, trials: int = 5) -> bool:
    """sft_loss(logits (B, T, V), labels (B, T)) -> mean next-token cross-entropy over labels != -100."""
    def trial():
        import torch.nn.functional as F

        gen = torch.Generator().manual_seed(808)
        for t in range(trials):
            B, T, V = (int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(3, 12, (1,), generator=gen)),
                       int(torch.randint(5, 40, (1,), generator=gen)))
            logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 3
            labels = torch.randint(V, (B, T), generator=gen)
            labels[torch.rand(B, T, generator=gen) < 0.5] = -100
            labels[0, -1] = 1
            expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
            problem = compare("sft_loss", torch.as_tensor(call(sft_loss, logits.clone(), labels.clone())).reshape(()),
                              expected, atol=1e-6)
            if problem:
                return problem + " (remember: the logits at position t predict the label at t+1)"
        return None
    return run_check("SFT loss", trial)


def check_packed_mask(packed_mask: Callable, trials: int = 4) -> bool:
    """packed_mask(doc_ids (N, T), -1 = padding) -> (N, T, T) bool: causal and within the same document."""
    def trial():
        gen = torch.Generator().manual_seed(809)
        for t in range(trials):
            N, T = int(torch.randint(1, 3, (1,), generator=gen)), int(torch.randint(4, 16, (1,), generator=gen))
            lengths = torch.randint(1, 6, (N, 8), generator=gen)
            doc_ids = torch.full((N, T), -1)
            for n in range(N):
                pos, d = 0, 0
                while pos < T - 1:
                    k = min(int(lengths[n, d % 8]), T - 1 - pos)
                    doc_ids[n, pos:pos + k] = d
                    pos, d = pos + k, d + 1
            expected = torch.zeros(N, T, T, dtype=torch.bool)
            for n in range(N):
                for i in range(T):
                    for j in range(i + 1):
                        expected[n, i, j] = bool(doc_ids[n, i] == doc_ids[n, j] and doc_ids[n, i] >= 0)
            got = torch.as_tensor(call(packed_mask, doc_ids.clone()))
            if got.shape != expected.shape:
                return f"mask has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            if not torch.equal(got.bool(), expected):
                return (f"{int((got.bool() != expected).sum())} entries differ (trial {t}): a token may see earlier "
                        "tokens of its own document only, and padding (-1) sees nothing")
        return None
    return run_check("packed attention mask", trial)



# ---- 08 dpo checks (issue 9) ----

def check_dpo_loss(dpo_loss_fn: Callable, trials: int = 4) -> bool:
    """dpo_loss_fn(pc, pr, rc, rr, beta) -> per-pair losses (B,) = -log σ(β[(pc - rc) - (pr - rr)])."""
    import torch.nn.functional as F

    def trial():
        gen = torch.Generator().manual_seed(808)
        for t in range(trials):
            B, beta = 2 + 3 * t, [0.1, 0.5, 1.0, 3.0][t % 4]
            pc, pr, rc, rr = (-30 * torch.rand(B, generator=gen, dtype=torch.float64) for _ in range(4))
            expected = -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
            got = call(dpo_loss_fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
            if isinstance(got, tuple):
                got = got[0]
            problem = compare("losses", got, expected, atol=1e-6)
            if problem:
                hint = ""
                if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                    if torch.allclose(got.double(), -F.logsigmoid(-beta * ((pc - rc) - (pr - rr))), atol=1e-6):
                        hint = " (sign flipped: the chosen log-ratio comes first)"
                    elif torch.allclose(got.double(), -F.logsigmoid((pc - rc) - (pr - rr)), atol=1e-6):
                        hint = " (multiply the log-ratio difference by beta)"
                return problem + f" (trial {t}, B={B}, beta={beta}){hint}"
        return None
    return run_check("DPO loss", trial)


def check_simpo_loss(simpo_loss_fn: Callable, trials: int = 4) -> bool:
    """simpo_loss_fn(chosen_avg, rejected_avg, beta, gamma) -> per-pair losses (B,) = -log σ(β·c - β·r - γ)."""
    import torch.nn.functional as F

    def trial():
        gen = torch.Generator().manual_seed(809)
        for t in range(trials):
            B, beta, gamma = 3 + t, [2.0, 2.5, 1.0, 10.0][t % 4], [0.5, 1.0, 0.0, 3.0][t % 4]
            c, r = (-3 * torch.rand(B, generator=gen, dtype=torch.float64) for _ in range(2))
            expected = -F.logsigmoid(beta * c - beta * r - gamma)
            got = call(simpo_loss_fn, c.clone(), r.clone(), beta, gamma)
            if isinstance(got, tuple):
                got = got[0]
            problem = compare("losses", got, expected, atol=1e-6)
            if problem:
                hint = ""
                if isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.allclose(
                        got.double(), -F.logsigmoid(beta * (c - r - gamma)), atol=1e-6):
                    hint = " (gamma is in reward units: subtract it after multiplying by beta)"
                return problem + f" (trial {t}, beta={beta}, gamma={gamma}){hint}"
        return None
    return run_check("SimPO loss", trial)


def check_completion_logprob(completion_logprob: Callable, trials: int = 4) -> bool:
    """completion_logprob(logits (B, T, V), input_ids (B, T), loss_mask (B, T)) -> (B,) summed log p of the masked
    tokens, where token t is predicted by logits at position t-1; compared with a float64 gather."""
    def trial():
        gen = torch.Generator().manual_seed(810)
        for t in range(trials):
            B, T, V = 1 + t, 5 + 2 * t, 7 + t
            logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * (1 + 5 * t)
            ids = torch.randint(0, V, (B, T), generator=gen)
            mask = torch.zeros(B, T, dtype=torch.bool)
            for b in range(B):
                start = int(torch.randint(1, T - 1, (1,), generator=gen))
                mask[b, start:T - int(torch.randint(0, 2, (1,), generator=gen))] = True
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
            expected = (logp * mask[:, 1:]).sum(-1)
            problem = compare("completion log-prob", call(completion_logprob, logits.clone(), ids.clone(), mask.clone()),
                              expected, atol=1e-6)
            if problem:
                unshifted = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
                got = completion_logprob(logits.clone(), ids.clone(), mask.clone())
                hint = (" (shift by one: logits[:, t-1] predict input_ids[:, t])"
                        if isinstance(got, torch.Tensor) and torch.allclose(got.double(), (unshifted * mask).sum(-1), atol=1e-6)
                        else "")
                return problem + f" (trial {t}, shape {(B, T, V)}){hint}"
        return None
    return run_check("completion log-prob", trial)


# ---- 09 grpo checks (issue 10) ----

def check_group_advantages(group_advantages: Callable, trials: int = 4) -> bool:
    """group_advantages(rewards (N,), group_size) -> (N,): (r - group mean) / (unbiased group std + 1e-4), as trl."""
    def trial():
        gen = torch.Generator().manual_seed(909)
        for t in range(trials):
            G, n_groups = (2, 4, 8, 8)[t % 4], 1 + t
            r = torch.randint(0, 3, (n_groups * G,), generator=gen).to(torch.float64)
            if t == trials - 1:
                r[:G] = 1.0  # a group where every completion got the same reward
            grouped = r.view(n_groups, G)  # (groups, G)
            expected = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).reshape(-1)
            got = call(group_advantages, r.clone(), G)
            if isinstance(got, torch.Tensor) and torch.isnan(got).any():
                return "NaN in the advantages: a group with equal rewards must give 0 (add 1e-4 to the std)"
            problem = compare("group_advantages(rewards, G)", got, expected, atol=1e-6)
            if problem:
                hint = " (use the unbiased std, torch.std's default, and add 1e-4)" if "differs" in problem else ""
                return problem + f" for G={G}, rewards {r.tolist()}" + hint
        return None
    return run_check("group advantages", trial)


def check_k3_kl(k3_kl: Callable, trials: int = 4) -> bool:
    """k3_kl(logps, ref_logps) -> per-token exp(r - l) - (r - l) - 1, an unbiased, never-negative estimate of KL."""
    def trial():
        gen = torch.Generator().manual_seed(910)
        for t in range(trials):
            logps = -torch.rand(2 + t, 3 + 2 * t, generator=gen, dtype=torch.float64) * 4
            ref = logps + torch.randn(logps.shape, generator=gen, dtype=torch.float64) * (0.1 + t)
            d = ref - logps
            problem = compare("k3_kl(logps, ref_logps)", call(k3_kl, logps.clone(), ref.clone()),
                              torch.exp(d) - d - 1, atol=1e-8, rtol=1e-8)
            if problem:
                return problem + " (r - l means ref_logps - logps)"
        return None
    return run_check("k3 KL estimator", trial)


def check_clipped_surrogate(clipped_surrogate: Callable, trials: int = 4) -> bool:
    """clipped_surrogate(logps, old_logps, advantages (N,), clip_eps) -> per-token loss -min(ρA, clip(ρ, 1±ε)A)."""
    def trial():
        gen = torch.Generator().manual_seed(911)
        for t in range(trials):
            N, C, eps = 3 + t, 4 + t, (0.1, 0.2, 0.3, 0.2)[t % 4]
            logps = -torch.rand(N, C, generator=gen, dtype=torch.float64) * 3
            old = logps + torch.randn(N, C, generator=gen, dtype=torch.float64) * 0.4
            adv = torch.randn(N, generator=gen, dtype=torch.float64)
            ratio = torch.exp(logps - old)
            a = adv[:, None]
            expected = -torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
            problem = compare("clipped_surrogate(...)", call(clipped_surrogate, logps.clone(), old.clone(), adv.clone(), eps),
                              expected, atol=1e-8)
            if problem:
                return problem + f" (clip_eps={eps}; advantages are per sequence: broadcast them over tokens)"
        return None
    return run_check("clipped surrogate", trial)
