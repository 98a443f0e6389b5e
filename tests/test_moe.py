"""MoE: parity with transformers' Mixtral / Qwen3-MoE blocks and aux loss, capacity, counts, bad inputs."""

import math
import warnings

import pytest
import torch

from course_utils import moe as M

mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
qwen3_moe = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
qwen2_moe = pytest.importorskip("transformers.models.qwen2_moe.modeling_qwen2_moe")

warnings.filterwarnings("ignore", message=".*ExpertsInterface.*")


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("n_experts,top_k,n_layers,n_tokens", [(8, 2, 1, 50), (4, 1, 3, 17), (16, 4, 2, 64), (6, 6, 2, 9)])
def test_load_balancing_loss_matches_transformers(n_experts, top_k, n_layers, n_tokens):
    gen = torch.Generator().manual_seed(n_experts * 100 + top_k)
    logits = tuple(torch.randn(n_tokens, n_experts, generator=gen) * 2 for _ in range(n_layers))
    for ref_fn in (mixtral.load_balancing_loss_func, qwen2_moe.load_balancing_loss_func):
        ref = ref_fn(logits, n_experts, top_k)
        got = M.load_balancing_loss(logits, n_experts, top_k)
        assert abs(got.item() - ref.item()) < 1e-5, f"max_diff {abs(got.item() - ref.item())}"


def test_load_balancing_loss_with_padding_matches_transformers():
    gen = torch.Generator().manual_seed(7)
    batch, seq, n_experts, top_k = 3, 11, 8, 2
    logits = tuple(torch.randn(batch * seq, n_experts, generator=gen) for _ in range(2))
    mask = (torch.rand(batch, seq, generator=gen) > 0.3).long()
    ref = mixtral.load_balancing_loss_func(logits, n_experts, top_k, attention_mask=mask)
    got = M.load_balancing_loss(logits, n_experts, top_k, attention_mask=mask)
    assert abs(got.item() - ref.item()) < 1e-5, f"max_diff {abs(got.item() - ref.item())}"


def test_load_balancing_loss_hand_values():
    # uniform router, every expert chosen equally often: f_e = k/E, P_e = 1/E -> E * E * (k/E) * (1/E) = k
    n_experts, top_k = 4, 2
    logits = torch.zeros(8, n_experts)
    logits[torch.arange(8), torch.arange(8) % 4] = 1e-4  # break ties evenly
    logits[torch.arange(8), (torch.arange(8) + 1) % 4] = 5e-5
    assert abs(M.load_balancing_loss(logits, n_experts, top_k).item() - top_k) < 1e-3
    # total collapse onto expert 0 with top-1: f = P = e_0 -> E
    collapsed = torch.full((10, n_experts), -30.0)
    collapsed[:, 0] = 30.0
    assert abs(M.load_balancing_loss(collapsed, n_experts, 1).item() - n_experts) < 1e-4


def _copy_to_hf(moe, block):
    gate_up, down = moe.expert_weights_3d()
    with torch.no_grad():
        block.gate.weight.copy_(moe.gate.weight)
        block.experts.gate_up_proj.copy_(gate_up)
        block.experts.down_proj.copy_(down)
    return block.eval()


@pytest.mark.parametrize("d_model,d_ff,n_experts,top_k,shape", [(32, 48, 8, 2, (2, 7)), (16, 40, 4, 1, (1, 13)),
                                                                 (24, 24, 6, 3, (3, 5))])
def test_moe_matches_mixtral_block(d_model, d_ff, n_experts, top_k, shape):
    torch.manual_seed(d_model + n_experts)
    moe = M.MoE(d_model, d_ff, n_experts, top_k).eval()
    cfg = mixtral.MixtralConfig(hidden_size=d_model, intermediate_size=d_ff, num_local_experts=n_experts,
                                num_experts_per_tok=top_k)
    block = _copy_to_hf(moe, mixtral.MixtralSparseMoeBlock(cfg))
    x = torch.randn(*shape, d_model)
    with torch.no_grad():
        d = _max_diff(moe(x), block(x))
    assert d < 1e-5, f"max_diff {d}"


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_moe_matches_qwen3_moe_block(norm_topk_prob):
    torch.manual_seed(3)
    d_model, d_ff, n_experts, top_k = 32, 16, 16, 4
    moe = M.MoE(d_model, d_ff, n_experts, top_k, norm_topk_prob=norm_topk_prob).eval()
    cfg = qwen3_moe.Qwen3MoeConfig(hidden_size=d_model, moe_intermediate_size=d_ff, num_experts=n_experts,
                                   num_experts_per_tok=top_k, norm_topk_prob=norm_topk_prob)
    block = _copy_to_hf(moe, qwen3_moe.Qwen3MoeSparseMoeBlock(cfg))
    x = torch.randn(2, 9, d_model)
    with torch.no_grad():
        d = _max_diff(moe(x), block(x))
    assert d < 1e-5, f"max_diff {d}"


def test_moe_matches_dense_float64_reference_and_grads_flow():
    torch.manual_seed(0)
    moe = M.MoE(12, 20, 5, 2).double()
    x = torch.randn(4, 6, 12, dtype=torch.float64, requires_grad=True)
    # float64 reference: every expert on every token, weighted by a hand-built top-k mixture
    h = x.reshape(-1, 12)
    probs = torch.softmax(h @ moe.gate.weight.t(), -1)
    top = probs.topk(2, -1)
    ref = torch.zeros_like(h)
    for e, expert in enumerate(moe.experts):
        w = ((top.indices == e) * top.values).sum(-1) / top.values.sum(-1)
        ref = ref + w[:, None] * expert(h)
    out = moe(x)
    assert _max_diff(out, ref.view_as(out)) < 1e-12
    out.sum().backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_top_k_routing_equals_keep_top_k_masking():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(20, 8, generator=gen)
    w, idx = M.top_k_routing(logits, 3)
    masked = torch.full_like(logits, float("-inf")).scatter(1, idx, logits.gather(1, idx))
    ref = torch.softmax(masked, -1).gather(1, idx)
    assert _max_diff(w, ref) < 1e-6


def test_capacity_keep_mask_hand_example():
    # 4 tokens, top-2, 3 experts, capacity 2. Slot-major order: first choices of tokens 0..3, then second choices.
    index = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    keep = M.capacity_keep_mask(index, 3, 2)
    # expert 0 first choices: tokens 0,1 kept, token 2 dropped; token 3's second choice (0) dropped too
    # expert 1: token 3 (first choice), token 0 (second) kept; token 2 second choice -> 3rd in queue, dropped
    expected = torch.tensor([[True, True], [True, True], [False, False], [True, False]])
    assert torch.equal(keep, expected), keep
    assert M.expert_capacity(4, 3, 2, 0.75) == math.ceil(0.75 * 4 * 2 / 3)


def test_capacity_dropped_tokens_contribute_zero():
    torch.manual_seed(1)
    full = M.MoE(8, 16, 4, 1).eval()
    capped = M.MoE(8, 16, 4, 1, capacity_factor=0.5).eval()
    capped.load_state_dict(full.state_dict())
    x = torch.randn(40, 8)
    with torch.no_grad():
        a, b = full(x), capped(x)
    kept = capped.last_keep[:, 0]
    assert (~kept).any()
    assert _max_diff(a[kept], b[kept]) < 1e-6
    assert b[~kept].abs().max().item() == 0.0


def test_noisy_router_is_reproducible_and_only_in_training():
    torch.manual_seed(0)
    moe = M.MoE(8, 8, 4, 1, noise_std=1.0)
    x = torch.randn(50, 8)
    moe.train()
    moe.gate.generator = torch.Generator().manual_seed(9)
    moe(x)
    i1 = moe.last_top_k_index.clone()
    moe.gate.generator = torch.Generator().manual_seed(9)
    moe(x)
    assert torch.equal(i1, moe.last_top_k_index)
    moe.eval()
    moe(x)
    clean = (x @ moe.gate.weight.t()).argmax(-1)
    assert torch.equal(moe.last_top_k_index[:, 0], clean)
    assert not torch.equal(i1[:, 0], clean)


def test_importance_cv_loss_float64():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    imp = torch.softmax(logits, -1).sum(0)
    ref = (imp.std(unbiased=False) / imp.mean()) ** 2
    assert abs(M.importance_cv_loss(logits).item() - ref.item()) < 1e-6


def test_count_moe_params_mixtral_by_hand():
    c = M.count_moe_params("mistralai/Mixtral-8x7B-v0.1")
    h, i, n_layers, vocab = 4096, 14336, 32, 32000
    expert = 3 * h * i
    attn = 2 * h * h + 2 * h * 1024  # q, o (4096x4096) and k, v (4096x1024, 8 KV heads of 128)
    per_layer = attn + 8 * expert + 8 * h + 2 * h  # experts, router, two RMSNorms
    total = n_layers * per_layer + 2 * vocab * h + h
    assert c.per_expert_per_layer == expert
    assert c.total == total, (c.total, total)
    assert c.active == total - 6 * expert * n_layers


def test_count_moe_params_deepseek_v3_by_hand_and_published():
    c = M.count_moe_params("deepseek-ai/DeepSeek-V3")
    h, vocab, heads = 7168, 129280, 128
    q_rank, kv_rank, nope, rope, v = 1536, 512, 128, 64, 128
    # MLA: q down (+norm), q up, kv down (+rope key), kv norm, kv up, output
    attn = h * q_rank + q_rank + q_rank * heads * (nope + rope) + h * (kv_rank + rope) + kv_rank \
        + kv_rank * heads * (nope + v) + heads * v * h
    expert = 3 * h * 2048
    moe_ffn = 256 * expert + expert + 256 * h  # routed experts, 1 shared expert, router
    total = 61 * (attn + 2 * h) + 3 * (3 * h * 18432) + 58 * moe_ffn + 2 * vocab * h + h  # 3 dense FFN layers
    assert (c.n_moe_layers, c.per_expert_per_layer) == (58, expert)
    assert c.total == total, (c.total, total)
    assert c.active == total - 58 * 248 * expert  # shared expert and dense layers stay active
    # Published (DeepSeek-V3 README): 671B total, 37B activated; README_WEIGHTS: 36.6B activated without
    # the input embedding. The 14B MTP module in the released checkpoint is not part of either figure.
    assert abs(c.total / 671e9 - 1) < 0.005, c.total
    assert abs(c.active / 37e9 - 1) < 0.02, c.active
    assert abs((c.active - c.input_embedding) - 36.6e9) < 0.1e9, c.active - c.input_embedding
    mtp_unique, mtp_active = M.deepseek_mtp_params()
    assert abs(mtp_unique / 11.5e9 - 1) < 0.02, mtp_unique  # README_WEIGHTS: 11.5B unique MTP parameters
    assert mtp_unique == attn + 2 * h + moe_ffn + 2 * h * h + 3 * h
    assert mtp_active == mtp_unique - 248 * expert


def test_biased_top_k_routing_matches_deepseek_v3_router():
    ds = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")
    for n_experts, top_k, d in [(8, 2, 16), (16, 4, 24), (6, 1, 8)]:
        cfg = ds.DeepseekV3Config(hidden_size=d, n_routed_experts=n_experts, num_experts_per_tok=top_k, n_group=1,
                                  topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=True)
        router = ds.DeepseekV3TopkRouter(cfg)
        gen = torch.Generator().manual_seed(n_experts)
        with torch.no_grad():
            router.weight.copy_(torch.randn(n_experts, d, generator=gen))
            router.e_score_correction_bias.copy_(torch.randn(n_experts, generator=gen) * 0.3)
        x = torch.randn(40, d, generator=gen)
        logits, w_ref, i_ref = router(x)
        w, i = M.biased_top_k_routing(logits.sigmoid(), router.e_score_correction_bias, top_k)
        mix = lambda w, i: torch.zeros(40, n_experts).scatter_add_(1, i, w)  # noqa: E731
        d_max = _max_diff(mix(w, i), mix(w_ref, i_ref))
        assert d_max < 1e-6, f"max_diff {d_max}"


def test_update_expert_bias_hand_example_and_balances():
    index = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 3]])  # loads 4, 2, 1, 1 (mean 2)
    got = M.update_expert_bias(torch.zeros(4), index, rate=0.1)
    assert torch.allclose(got, torch.tensor([-0.1, 0.0, 0.1, 0.1])), got
    gen = torch.Generator().manual_seed(0)
    scores = torch.sigmoid(torch.randn(400, 8, generator=gen) + torch.linspace(2, 0, 8))  # skewed to expert 0
    bias = torch.zeros(8)
    before = M.expert_share(M.biased_top_k_routing(scores, bias, 2)[1], 8).max().item()
    for _ in range(200):
        bias = M.update_expert_bias(bias, M.biased_top_k_routing(scores, bias, 2)[1], rate=0.01)
    after = M.expert_share(M.biased_top_k_routing(scores, bias, 2)[1], 8).max().item()
    assert after < before - 0.1 and after < 0.2, (before, after)


def test_tiny_moe_lm_trains_and_logs_shares():
    model = M.moe_language_model(50, d_model=16, n_layers=1, n_heads=2, d_ff=16, n_experts=4, top_k=2)
    rows = torch.randint(0, 50, (8, 12), generator=torch.Generator().manual_seed(0))
    log = M.train_moe_lm(model, rows, steps=3, batch_size=2, aux_loss_coef=0.01)
    assert log["share"].shape == (3, 1, 4)
    assert torch.allclose(log["share"].sum(-1), torch.ones(3, 1))


@pytest.mark.parametrize("call,match", [
    (lambda: M.MoE(8, 8, 4, 5), "top_k must be <= n_experts"),
    (lambda: M.MoE(8, 8, 0, 1), "n_experts must be >= 1"),
    (lambda: M.MoE(8, 8, 4, 2, capacity_factor=0), "capacity_factor must be a number > 0"),
    (lambda: M.TopKRouter(8, 4, 2, noise_std=-1), "noise_std must be a number >= 0"),
    (lambda: M.TopKRouter(8, 4, 2.0), "top_k must be an int"),
    (lambda: M.load_balancing_loss(torch.randn(5, 4), 3, 1), "last dim must equal n_experts=3"),
    (lambda: M.load_balancing_loss(torch.randn(5, 4, 2), 4, 1), "router_logits must be a 2-D tensor"),
    (lambda: M.load_balancing_loss(torch.randn(5, 4), 4, 1, attention_mask=torch.ones(3)), "attention_mask must have 5"),
    (lambda: M.top_k_routing(torch.randn(3, 4), 0), "top_k must be >= 1"),
    (lambda: M.expert_capacity(10, 4, 2, -1.0), "capacity_factor must be a number > 0"),
    (lambda: M.MoE(8, 8, 4, 2)(torch.randn(3, 7)), r"x must have shape \(B, T, 8\)"),
    (lambda: M.count_moe_params("nope/nope"), "name_or_config must be one of"),
    (lambda: M.deepseek_mtp_params("mistralai/Mixtral-8x7B-v0.1"), "must describe a deepseek_v3 model"),
    (lambda: M.biased_top_k_routing(torch.rand(5, 4), torch.zeros(3), 2), r"bias must have shape \(4,\)"),
    (lambda: M.biased_top_k_routing(torch.rand(5, 4), torch.zeros(4), 5), "top_k must be <= n_experts"),
    (lambda: M.update_expert_bias(torch.zeros(4), torch.zeros(3, 2, dtype=torch.long), rate=0), "rate must be"),
])
def test_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_token_class_by_hand():
    cases = {"Ġ5": "digit", "42": "digit", "Ġcat": "word start (space+letters)", "ing": "letters (inside a word)",
             ".": "punctuation/other", "Ġ+": "punctuation/other", "Ċ": "punctuation/other", "Ġ4a": "punctuation/other"}
    for token, expected in cases.items():
        assert M.token_class(token) == expected, token


def _swiglu64(mlp, x):
    g, u, d = (lin.weight.double() for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    return (torch.nn.functional.silu(x @ g.t()) * (x @ u.t())) @ d.t()


def test_shared_experts_added_to_routed_output_float64():
    gen = torch.Generator().manual_seed(11)
    layer = M.MoE(12, 10, 6, 2, n_shared_experts=2)
    assert layer.shared_experts.gate_proj.weight.shape == (20, 12)  # width n_shared * d_ff
    x = torch.randn(15, 12, generator=gen)
    probs = torch.softmax(x.double() @ layer.gate.weight.double().t(), -1)  # (N, E)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    ref = _swiglu64(layer.shared_experts, x.double())
    for n in range(15):
        for j in range(2):
            ref[n] += w[n, j] * _swiglu64(layer.experts[int(idx[n, j])], x[n].double())
    with torch.no_grad():
        assert _max_diff(layer(x), ref) < 1e-5
        assert _max_diff(M.dense_reference_moe(layer, x), ref) < 1e-5


def test_router_bias_changes_the_choice_not_the_weights():
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(40, 5, generator=gen)
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0])  # expert 3 is always chosen
    w, idx = M.top_k_routing(logits, 2, bias=bias)
    assert (idx == 3).any(-1).all()
    probs = torch.softmax(logits.double(), -1)
    hand = probs.gather(1, idx) / probs.gather(1, idx).sum(-1, keepdim=True)  # unbiased probabilities, renormalized
    assert _max_diff(w, hand) < 1e-6
    router = M.TopKRouter(8, 5, 2)
    x = torch.randn(40, 8, generator=gen)
    router.expert_bias[3] = 5.0
    assert (router(x)[2] == 3).any(-1).all()


def test_expert_choice_routing_takes_each_experts_best_tokens():
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(30, 4, generator=gen)
    weights, token_index = M.expert_choice_routing(logits, capacity=7)
    probs = torch.softmax(logits.double(), -1)
    for e in range(4):
        order = sorted(range(30), key=lambda n: -probs[n, e].item())[:7]
        assert sorted(token_index[e].tolist()) == sorted(order)
        assert _max_diff(weights[e], probs[token_index[e], e]) < 1e-6
    counts = M.experts_per_token(token_index, 30)
    assert counts.sum().item() == 4 * 7 and counts.shape == (30,)


def test_soft_moe_matches_slot_by_slot_float64_and_is_not_causal():
    gen = torch.Generator().manual_seed(14)
    layer = M.SoftMoE(6, 8, n_experts=3, slots_per_expert=2)
    x = torch.randn(2, 5, 6, generator=gen)
    phi = layer.slot_embeddings.double()
    ref = torch.zeros(2, 5, 6, dtype=torch.float64)
    for b in range(2):
        xb = x[b].double()
        logits = xb @ phi  # (T, 6 slots)
        dispatch = torch.exp(logits) / torch.exp(logits).sum(0, keepdim=True)
        combine = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
        slot_out = [_swiglu64(layer.experts[s // 2], (dispatch[:, s:s + 1] * xb).sum(0)) for s in range(6)]
        for t in range(5):
            ref[b, t] = sum(combine[t, s] * slot_out[s] for s in range(6))
    with torch.no_grad():
        out = layer(x)
        assert _max_diff(out, ref) < 1e-5
        x2 = x.clone()
        x2[:, -1] += 1.0  # change only the last token
        assert _max_diff(layer(x2)[:, 0], out[:, 0]) > 1e-4  # the first token's output moves: future leaks in


def test_active_params_dense_vs_moe_by_hand():
    dense = M.dense_language_model(50, d_model=16, n_layers=2, n_heads=2, d_ff=64)
    moe = M.moe_language_model(50, d_model=16, n_layers=2, n_heads=2, d_ff=16, n_experts=8, top_k=3, n_shared_experts=1)
    n_dense = sum(p.numel() for p in dense.parameters())
    assert M.active_params(dense) == n_dense
    assert M.active_params(moe) == n_dense + 2 * 16 * 8  # same FFN width (3 + 1) * 16 = 64, plus one router per layer
    assert sum(p.numel() for p in moe.parameters()) == n_dense + 2 * 16 * 8 + 2 * 5 * 3 * 16 * 16  # 5 idle experts


def test_training_options_bias_updates_and_dense_model():
    rows = torch.randint(0, 50, (40, 16), generator=torch.Generator().manual_seed(0))
    moe = M.moe_language_model(50, d_model=16, n_layers=1, n_heads=2, d_ff=16, n_experts=4, top_k=1)
    log = M.train_moe_lm(moe, rows, steps=5, batch_size=4, aux_loss_coef=0.0, z_loss_coef=1e-3, bias_update_rate=0.1)
    bias = moe.model.layers[0].mlp.gate.expert_bias
    assert bias.abs().max().item() > 0 and len(log["z"]) == 5 and min(log["z"]) > 0
    dense = M.dense_language_model(50, d_model=16, n_layers=1, n_heads=2, d_ff=16)
    log = M.train_moe_lm(dense, rows, steps=3, batch_size=4, aux_loss_coef=0.0)
    assert len(log["ce"]) == 3 and log["share"].shape == (3, 0)
    with pytest.raises(ValueError, match="need MoE layers"):
        M.train_moe_lm(dense, rows, steps=1, batch_size=4, aux_loss_coef=0.1)
    weights = M.routing_map(moe, rows[0])
    assert weights.shape == (16, 4) and torch.allclose(weights.sum(-1), torch.ones(16)) and ((weights > 0).sum(-1) == 1).all()


def test_router_tradeoff_aux_coefficient_evens_the_load():
    greedy, balanced = M.router_tradeoff(0.0), M.router_tradeoff(2.0)
    assert greedy["share"][0] > 0.3 and balanced["aux"] < greedy["aux"] and balanced["dropped"] < greedy["dropped"]
    unlimited = [M.router_tradeoff(c, capacity_factor=8.0) for c in (0.0, 2.0)]  # nothing dropped
    assert unlimited[0]["dropped"] == unlimited[1]["dropped"] == 0
    assert unlimited[1]["quality"] < unlimited[0]["quality"]  # balancing costs quality when nothing is dropped
    with pytest.raises(ValueError, match="aux_loss_coef"):
        M.router_tradeoff(-1.0)


def test_router_tradeoff_trains_once_per_setting_and_reuses_it_for_another_capacity():
    from course_utils.moe.balance import _trained_router

    coef = 0.05 + 0.1 * torch.rand(()).item()  # a setting no other test trained
    _trained_router.cache_clear()
    tight = M.router_tradeoff(coef, capacity_factor=0.75)
    loose = M.router_tradeoff(coef, capacity_factor=2.0)
    assert _trained_router.cache_info().hits == 1 and _trained_router.cache_info().misses == 1
    assert torch.equal(tight["index"], loose["index"]) and loose["dropped"] <= tight["dropped"]
    _trained_router.cache_clear()
    fresh = M.router_tradeoff(coef, capacity_factor=2.0)  # trained anew: the kept router was not changed by its use
    assert torch.equal(fresh["index"], loose["index"]) and torch.equal(fresh["keep"], loose["keep"])
    assert fresh["aux"] == loose["aux"] and fresh["quality"] == loose["quality"]
