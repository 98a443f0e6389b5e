"""Parity and bad-input tests for course_utils.attention (references: torch SDPA, transformers Qwen3, float64 math)."""

import math

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu
from course_utils import attention as A

SHAPES = [(1, 1, 1, 1, 8), (2, 3, 5, 5, 16), (2, 4, 17, 33, 32), (1, 2, 64, 64, 64)]  # (B, H, T, S, D)


def _qkv(B, H, T, S, D, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g, dtype=dtype), torch.randn(B, H, S, D, generator=g, dtype=dtype),
            torch.randn(B, H, S, D + 3, generator=g, dtype=dtype))


def _close(got, expected, atol=1e-10, what=""):
    diff = (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0
    assert got.shape == expected.shape, f"{what} shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert diff <= atol, f"{what} max_diff {diff:.3g} > {atol}"


def _masks(T, S, B):
    masks = {"none": None}
    if T <= S:
        masks["causal"] = A.causal_mask(T, S)
    if T == S:
        masks["sliding"] = A.sliding_window_mask(T, 3)
    lengths = [max(1, S - 2 * b) for b in range(B)]
    masks["padding"] = A.padding_mask(lengths, S)
    return masks


@pytest.mark.parametrize("shape", SHAPES)
def test_sdpa_matches_torch(shape):
    q, k, v = _qkv(*shape, seed=sum(shape))
    for name, mask in _masks(shape[2], shape[3], shape[0]).items():
        out, w = A.scaled_dot_product_attention(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        _close(out, ref, what=f"out ({name})")
        _close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype), what=f"row sums ({name})")
        if mask is not None:
            assert torch.all(w[~mask.expand_as(w)] == 0), f"masked weights not zero ({name})"


def test_sdpa_scale_and_float32():
    q, k, v = _qkv(2, 2, 9, 11, 16, seed=3, dtype=torch.float32)
    out, _ = A.scaled_dot_product_attention(q, k, v, scale=0.37)
    _close(out, F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.37), atol=1e-5)


def test_sdpa_hand_worked():
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    out, w = A.scaled_dot_product_attention(q, k, v)
    a = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)  # softmax([1/√2, 0])[0]
    _close(w, torch.tensor([[a, 1 - a]], dtype=torch.float64), what="weights")
    _close(out, torch.tensor([[a + 3 * (1 - a)]], dtype=torch.float64), what="out")


def test_fully_masked_row_is_zero_not_nan():
    q, k, v = _qkv(1, 1, 3, 4, 8, seed=5)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    out, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(out[..., 1, :] == 0) and torch.all(w[..., 1, :] == 0)
    assert not torch.isnan(out).any()
    tiled = A.tiled_attention(q, k, v, mask, block_q=2, block_k=3)
    _close(tiled, out, what="tiled with a fully masked row")


@pytest.mark.parametrize("n_heads,n_kv", [(4, 4), (4, 2), (6, 1), (8, 2)])
def test_gqa_via_repeat_kv_matches_torch(n_heads, n_kv):
    g = torch.Generator().manual_seed(n_heads * 10 + n_kv)
    q = torch.randn(2, n_heads, 7, 16, generator=g, dtype=torch.float64)
    k = torch.randn(2, n_kv, 7, 16, generator=g, dtype=torch.float64)
    v = torch.randn(2, n_kv, 7, 16, generator=g, dtype=torch.float64)
    rep = n_heads // n_kv
    _close(A.repeat_kv(k, rep), torch.repeat_interleave(k, rep, dim=1), atol=0, what="repeat_kv")
    out, _ = A.scaled_dot_product_attention(q, A.repeat_kv(k, rep), A.repeat_kv(v, rep), A.causal_mask(7))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    _close(out, ref, what="GQA")


def test_masks_hand_worked():
    assert A.causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert A.causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert A.sliding_window_mask(4, 2).tolist() == [[True, False, False, False], [True, True, False, False],
                                                    [False, True, True, False], [False, False, True, True]]
    assert A.padding_mask([2, 3], 3).reshape(2, 3).tolist() == [[True, True, False], [True, True, True]]
    assert A.padding_mask(torch.tensor([1]), 2).shape == (1, 1, 1, 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("blocks", [(3, 5), (16, 128)])
def test_tiled_matches_naive(shape, blocks):
    q, k, v = _qkv(*shape, seed=sum(shape) + blocks[0])
    B, _, T, S, _ = shape
    for name, mask in _masks(T, S, B).items():
        ref = A.scaled_dot_product_attention(q, k, v, mask)[0]
        got = A.tiled_attention(q, k, v, mask, block_q=blocks[0], block_k=blocks[1])
        _close(got, ref, what=f"tiled ({name}, blocks {blocks})")
    if T <= S:
        ref = A.scaled_dot_product_attention(q, k, v, A.causal_mask(T, S))[0]
        _close(A.tiled_attention(q, k, v, causal=True, block_q=blocks[0], block_k=blocks[1]), ref, what="tiled causal")


def test_tiled_one_by_one_blocks():
    q, k, v = _qkv(2, 2, 6, 9, 8, seed=21)
    mask = A.padding_mask([9, 4], 9)
    _close(A.tiled_attention(q, k, v, mask, block_q=1, block_k=1), A.scaled_dot_product_attention(q, k, v, mask)[0])
    ref = A.scaled_dot_product_attention(q, k, v, A.causal_mask(6, 9))[0]
    _close(A.tiled_attention(q, k, v, causal=True, block_q=1, block_k=1), ref, what="tiled causal 1x1")


def test_online_softmax_matches_softmax():
    g = torch.Generator().manual_seed(7)
    for scale in (1.0, 50.0, 1000.0):  # huge logits: the running max must keep it finite
        x = torch.randn(3, 5, 37, generator=g, dtype=torch.float64) * scale
        for block in (1, 8, 64):
            _close(A.online_softmax(x, block), torch.softmax(x, -1), atol=1e-12, what=f"online softmax ×{scale}")


def test_linear_attention_matches_float64_definition():
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    sim = fq @ fk.transpose(-2, -1)  # (B, H, T, S), the explicit O(T²) form
    _close(A.linear_attention(q, k, v), (sim / sim.sum(-1, keepdim=True)) @ v, what="linear")
    csim = sim * A.causal_mask(9)
    _close(A.linear_attention(q, k, v, causal=True), (csim / csim.sum(-1, keepdim=True)) @ v, what="causal linear")
    _close(A.linear_attention_weights(q, k), sim / sim.sum(-1, keepdim=True), what="linear weights")


def test_entropy_matches_float64_with_zeros():
    g = torch.Generator().manual_seed(13)
    w = torch.softmax(torch.randn(4, 6, 10, generator=g, dtype=torch.float64), -1)
    w[0, 0] = torch.tensor([1.0] + [0.0] * 9, dtype=torch.float64)  # one-hot: entropy exactly 0
    w[1, 2, :5] = 0.0
    w[1, 2] /= w[1, 2].sum()
    logs = torch.where(w > 0, w.log(), torch.zeros_like(w))
    _close(A.attention_entropy(w), -(w * logs).sum(-1), atol=1e-12, what="entropy")
    assert A.attention_entropy(w)[0, 0].item() == 0.0
    alpha = torch.tensor([0.9, 0.05, 0.03, 0.02], dtype=torch.float64)
    hand = -(0.9 * math.log(0.9) + 0.05 * math.log(0.05) + 0.03 * math.log(0.03) + 0.02 * math.log(0.02))
    assert abs(A.attention_entropy(alpha).item() - hand) < 1e-12
    assert abs(A.attention_entropy(torch.full((4,), 0.25, dtype=torch.float64)).item() - math.log(4)) < 1e-12


def test_scaling_study_variance_grows_with_dk():
    g = torch.Generator().manual_seed(0)
    res = A.scaling_study([16, 256], n_rows=3000, scaled=False, generator=g)
    for d, var in zip(res["d_k"], res["dot_var"]):
        assert abs(var / d - 1) < 0.1, f"Var(q·k) {var:.1f} should be close to d_k={d}"
    assert res["entropy"][1] < res["entropy"][0] and res["jacobian_norm"][1] < res["jacobian_norm"][0]
    scaled = A.scaling_study([16, 256], n_rows=3000, scaled=True, generator=g)
    assert abs(scaled["entropy"][1] - scaled["entropy"][0]) < 0.05


def _qwen3_config(n_heads, n_kv, head_dim=16, hidden=48):
    from transformers import Qwen3Config

    cfg = Qwen3Config(hidden_size=hidden, num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=head_dim,
                      intermediate_size=64, num_hidden_layers=1, vocab_size=32, max_position_embeddings=64,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6)
    cfg._attn_implementation = "eager"
    return cfg


@pytest.mark.parametrize("n_heads,n_kv", [(4, 4), (4, 2), (4, 1)])
def test_attention_matches_transformers_qwen3(n_heads, n_kv):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3RotaryEmbedding

    torch.manual_seed(n_heads + n_kv)
    cfg = _qwen3_config(n_heads, n_kv)
    ref = Qwen3Attention(cfg, layer_idx=0).double().eval()
    with torch.no_grad():  # non-trivial q_norm / k_norm weights so the test sees them
        ref.q_norm.weight.uniform_(0.5, 1.5)
        ref.k_norm.weight.uniform_(0.5, 1.5)
    ours = A.Attention(48, n_heads, n_kv, head_dim=16, qk_norm=True, rope_theta=10000.0).double()
    ours.load_state_dict(ref.state_dict())
    B, T = 2, 11
    x = torch.randn(B, T, 48, dtype=torch.float64)
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = Qwen3RotaryEmbedding(cfg)(x, pos)
    additive = torch.zeros(T, T, dtype=torch.float64).masked_fill(~A.causal_mask(T), torch.finfo(torch.float64).min)
    with torch.no_grad():
        ref_out, ref_w = ref(x, (cos, sin), additive[None, None].expand(B, 1, T, T))
        out, w = ours(x)
    # Qwen3RMSNorm upcasts to float32 inside (and rotary cos/sin are float32), so float64 agrees to ~1e-7, not 1e-15
    _close(out, ref_out, atol=1e-6, what="Attention vs Qwen3Attention")
    _close(w, ref_w, atol=1e-6, what="weights vs Qwen3Attention")


def test_attention_matches_course_tiny_layer():
    """Our module on the hidden states a real course-tiny layer sees (captured by a hook) gives its output."""
    from course_utils.models import load_model

    model, tok = load_model("course-tiny", device="cpu", attn_implementation="eager")
    cfg = model.config
    layer = model.model.layers[1].self_attn
    ours = A.Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, head_dim=cfg.head_dim,
                       qk_norm=True, rope_theta=cfg.rope_parameters["rope_theta"], norm_eps=cfg.rms_norm_eps)
    ours.load_state_dict(layer.state_dict())
    seen = {}
    hook = layer.register_forward_hook(lambda m, args, kwargs, out: seen.update(x=kwargs["hidden_states"], out=out[0]),
                                       with_kwargs=True)
    ids = tok("Once upon a time, there was a blue fox named Rosa.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        model(input_ids=ids)
        hook.remove()
        out, _ = ours(seen["x"])
    _close(out, seen["out"], atol=1e-4, what="Attention vs course-tiny layer 1")


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_kv_cache_decoding_matches_full_forward(n_kv):
    torch.manual_seed(n_kv)
    attn = A.Attention(32, 4, n_kv, rope_theta=10000.0, qk_norm=True).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    with torch.no_grad():
        full, _ = attn(x)
        cache = A.KVCache()
        parts = [attn(x[:, :4], cache=cache)[0]] + [attn(x[:, t:t + 1], cache=cache)[0] for t in range(4, 9)]
    _close(torch.cat(parts, dim=1), full, atol=1e-12, what="cached decoding")
    assert cache.k.shape == (2, n_kv, 9, 8)  # only the compact KV heads are stored
    assert cache.nbytes() == A.kv_cache_bytes(1, n_kv, 8, 9, batch=2, bytes_per_value=8)


def test_kv_cache_bytes_hand_worked():
    # Llama-3.1-8B shape: 32 layers, 8 KV heads of 128, bf16, 8192 tokens = 2·32·8·128·8192·2 bytes = 1 GiB
    assert A.kv_cache_bytes(32, 8, 128, 8192) == 2**30
    assert A.mla_cache_bytes(60, 512, 64, 1000, bytes_per_value=2) == 60 * 576 * 1000 * 2


def test_greedy_decode_cache_and_no_cache_agree():
    from course_utils.models import load_model

    model, tok = load_model("course-tiny", device="cpu")
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    a = A.greedy_decode(model, ids, 12, use_cache=True)
    b = A.greedy_decode(model, ids, 12, use_cache=False)
    ref = model.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert torch.equal(a, b) and torch.equal(a, ref)


@pytest.mark.parametrize("name", ["minilm", "course-tiny"])
def test_model_attention_rows_sum_to_one(name):
    from course_utils.models import load_model

    model, tok = load_model(name, device="cpu", attn_implementation="eager")
    maps = A.attention_maps(model, tok, "The quick brown fox jumps over the lazy dog. " * 3, max_tokens=20)
    w = maps["weights"]
    L, H = (model.config.num_hidden_layers, model.config.num_attention_heads)
    assert w.shape[:2] == (L, H) and w.shape[-1] == 20 and maps["truncated"]
    _close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, what=f"{name} row sums")
    assert maps["causal"] == (name == "course-tiny")
    assert torch.all(maps["entropy"] <= maps["uniform_entropy"] + 1e-4) if not maps["causal"] else True
    assert maps["entropy"].shape == (L, H) and maps["sink"].shape == (L,)


def test_bad_inputs_raise_clear_errors():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="same last dim"):
        A.scaled_dot_product_attention(q, torch.randn(1, 2, 4, 6), torch.randn(1, 2, 4, 6))
    with pytest.raises(ValueError, match="same length S"):
        A.scaled_dot_product_attention(q, q, torch.randn(1, 2, 5, 8))
    with pytest.raises(ValueError, match="repeat_kv"):
        A.scaled_dot_product_attention(torch.randn(1, 4, 4, 8), q, q)
    with pytest.raises(TypeError, match="boolean"):
        A.scaled_dot_product_attention(q, q, q, mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        A.scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="scale must be"):
        A.scaled_dot_product_attention(q, q, q, scale=-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        A.scaled_dot_product_attention(q.long(), q, q)
    with pytest.raises(ValueError, match="n_heads must be divisible by n_kv_heads, got n_heads=6, n_kv_heads=4"):
        A.Attention(48, 6, 4)
    with pytest.raises(ValueError, match="x must have shape"):
        A.Attention(32, 4)(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        A.sliding_window_mask(4, 0)
    with pytest.raises(ValueError, match=r"lengths? must be in \[0, T=3\]"):
        A.padding_mask([1, 4], 3)
    with pytest.raises(ValueError, match="S \\(keys\\) must be >= T"):
        A.causal_mask(5, 3)
    with pytest.raises(ValueError, match="n_rep must be >= 1"):
        A.repeat_kv(q, 0)
    with pytest.raises(ValueError, match="non-negative"):
        A.attention_entropy(torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        A.kv_cache_bytes(32, 8, 128, 0)
    with pytest.raises(ValueError, match="bytes_per_value"):
        A.kv_cache_bytes(32, 8, 128, 10, bytes_per_value=0)
    with pytest.raises(TypeError, match="mask must be a boolean"):
        A.tiled_attention(q, q, q, mask=torch.ones(4, 4))


def test_attention_maps_bad_text():
    from course_utils.models import load_model

    model, tok = load_model("course-tiny", device="cpu", attn_implementation="eager")
    with pytest.raises(TypeError, match="text must be a string, got int"):
        A.attention_maps(model, tok, 42)
    with pytest.raises(ValueError, match=r"at least one non-space character, got '   '"):
        A.attention_maps(model, tok, "   ")
    one = A.attention_maps(model, tok, "a")  # one token: said, not an unexplained all-zero grid
    assert one["weights"].shape[-1] == 1 and "one token attends only to itself" in one["note"]


def test_plot_helpers_and_widget():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils import plotting, widgets
    from course_utils.models import load_model

    w = torch.softmax(torch.randn(5, 5), -1)
    fig, ax = plotting.plot_attention_weights(w, list("abcde"), list("abcde"), title="t")
    assert ax.get_title() == "t" and len(ax.get_xticklabels()) == 5
    fig2, ax2 = plotting.plot_entropy_grid(torch.rand(3, 4), uniform=1.6)
    assert "uniform = 1.60" in ax2.get_title() and len(ax2.texts) == 12
    plt.close("all")
    with pytest.raises(ValueError, match=r"weights must be a \(T, S\) matrix"):
        plotting.plot_attention_weights(torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="tokens_q must have 5 labels"):
        plotting.plot_attention_weights(w, list("abc"))
    model, tok = load_model("course-tiny", device="cpu", attn_implementation="eager")
    box = widgets.attention_explorer(model, tok, "word " * 200, max_tokens=16)  # long input: truncated, no crash
    assert box.children[0].children[0].value.startswith("word")  # the text box, in the first row
    with pytest.raises(TypeError, match="text must be a string"):
        widgets.attention_explorer(model, tok, ["not", "text"])
    plt.close("all")


def test_head_pattern_scores_by_hand():
    from course_utils.attention import head_pattern_scores

    period, T = 3, 6
    w = torch.zeros(2, 4, T, T)  # (L, H, T, T): one head per pattern in layer 0, layer 1 uniform
    for i in range(T):
        w[0, 0, i, max(i - 1, 0)] = 1.0  # previous token
        w[0, 1, i, i] = 1.0  # self
        w[0, 2, i, 0] = 1.0  # first token
        w[0, 3, i, max(i - period + 1, 0)] = 1.0  # induction: the token after the previous occurrence
        w[1, :, i, : i + 1] = 1.0 / (i + 1)
    s = head_pattern_scores(w, period)
    for h, name in enumerate(["previous token", "self", "first token", "induction"]):
        assert s[name][0, h] == 1.0 and s[name][0].sum() == 1.0, (name, s[name])
    expected_uniform = sum(1 / (i + 1) for i in range(period, T)) / (T - period)
    assert torch.allclose(s["induction"][1], torch.full((4,), expected_uniform))
    with pytest.raises(ValueError, match="at least two periods"):
        head_pattern_scores(w, 4)


def test_repeated_sequence_study_shapes_and_loss():
    from course_utils.attention import repeated_sequence_study

    model, tok = cu.load_model("course-tiny", device="cpu", attn_implementation="eager")
    out = repeated_sequence_study(model, len(tok), period=5, n=2, seed=1)
    assert out["weights"].shape == (2, 4, 4, 10, 10) and out["nll"].shape == (2, 9)
    assert torch.allclose(out["weights"].sum(-1), torch.ones(2, 4, 4, 10), atol=1e-5)
