"""Positional encoding: parity with transformers (RoPE init functions, apply_rotary_pos_emb, T5 buckets, ALiBi)."""

import copy
import math

import pytest
import torch
from transformers import Qwen3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding, apply_rotary_pos_emb
from transformers.models.t5.modeling_t5 import T5Attention

from course_utils import positional as P


def _close(got, ref, atol, rtol=0.0, what=""):
    diff = (got.double() - ref.double()).abs().max().item()
    assert torch.allclose(got.double(), ref.double(), atol=atol, rtol=rtol), f"{what} max_diff {diff:.3g}"


def _config(head_dim, base, rope_parameters, max_pos):
    rp = {**rope_parameters, "rope_theta": base}
    return Qwen3Config(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                       max_position_embeddings=max_pos, rope_parameters=rp)


SCALINGS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "linear", "factor": 1.5},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 1.0},
    {"rope_type": "yarn", "factor": 8.0},
    {"rope_type": "yarn", "factor": 4.0, "beta_fast": 16, "beta_slow": 2},
    {"rope_type": "yarn", "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 1.0},
    {"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.3, "truncate": False},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0},
]


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: s["rope_type"])
@pytest.mark.parametrize("head_dim,base,original", [(64, 10000.0, 256), (128, 500000.0, 8192), (32, 1e6, 4096)])
@pytest.mark.parametrize("seq_len", [None, 20000])
def test_rope_inv_freq_matches_transformers(scaling, head_dim, base, original, seq_len):
    scaling = dict(scaling)
    rt = scaling["rope_type"]
    if rt in ("yarn", "llama3"):
        scaling["original_max_position_embeddings"] = original
    max_pos = int(original * scaling["factor"]) if rt == "yarn" else original
    ref, ref_factor = ROPE_INIT_FUNCTIONS[rt](_config(head_dim, base, scaling, max_pos), "cpu", seq_len=seq_len)
    mine_scaling = dict(scaling, original_max_position_embeddings=original) if rt == "dynamic" else scaling
    got, got_factor = P.rope_inv_freq(head_dim, base, mine_scaling, seq_len=seq_len)
    _close(got, ref, atol=0.0, rtol=1e-6, what=f"{rt} inv_freq")
    assert got_factor == pytest.approx(ref_factor, rel=1e-12), (got_factor, ref_factor)


@pytest.mark.parametrize("rope_parameters", [
    {"rope_type": "linear", "factor": 4.0, "original_max_position_embeddings": 256},  # as real configs carry it
    {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "partial_rotary_factor": 0.25}])
def test_extra_keys_are_taken_as_transformers_takes_them(rope_parameters):
    cfg = _config(64, 10000.0, rope_parameters, 1024)
    ref, ref_factor = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](cfg, "cpu")
    unused = {"linear": {"original_max_position_embeddings"}}.get(rope_parameters["rope_type"], set())
    if unused & set(rope_parameters):
        with pytest.warns(UserWarning, match="ignoring keys.*original_max_position_embeddings"):
            got, factor = P.rope_inv_freq(64, 10000.0, rope_parameters)
    else:
        got, factor = P.rope_inv_freq(64, 10000.0, rope_parameters)
    assert got.shape == ref.shape
    _close(got, ref, atol=0.0, rtol=1e-6, what=str(rope_parameters))
    assert factor == pytest.approx(ref_factor, rel=1e-12)


@pytest.mark.parametrize("head_dim,base", [(64, 10000.0), (128, 1e6), (16, 500.0)])
def test_rope_default_matches_qwen3(head_dim, base):
    ref, ref_factor = Qwen3RotaryEmbedding.compute_default_rope_parameters(_config(head_dim, base, {"rope_type": "default"}, 256))
    got, factor = P.rope_inv_freq(head_dim, base)
    _close(got, ref, atol=0.0, rtol=1e-6, what="default inv_freq")
    assert factor == ref_factor == 1.0


def test_ntk_is_default_with_larger_base():
    got, _ = P.rope_inv_freq(64, 10000.0, {"rope_type": "ntk", "factor": 4.0})
    ref = 1.0 / (10000.0 * 4.0 ** (64 / 62)) ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    _close(got, ref, atol=0.0, rtol=1e-5, what="ntk")
    # the highest frequency is kept, the lowest is divided by exactly the factor
    base_freq, _ = P.rope_inv_freq(64, 10000.0)
    assert got[0] == base_freq[0]
    assert (base_freq[-1] / got[-1]).item() == pytest.approx(4.0, rel=1e-5)


def test_yarn_attention_factor_formula():
    for s in (2.0, 4.0, 8.0, 32.0):
        _, af = P.rope_inv_freq(64, 10000.0, {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": 256})
        assert af == pytest.approx(0.1 * math.log(s) + 1.0, rel=1e-12)


@pytest.mark.parametrize("shape", [(2, 4, 7, 64), (1, 3, 16, 32), (3, 2, 5, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_matches_apply_rotary_pos_emb(shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    B, H, T, D = shape
    q = torch.randn(shape, generator=gen).to(dtype)
    k = torch.randn(shape, generator=gen).to(dtype)
    positions = torch.randint(0, 5000, (B, T), generator=gen)
    inv_freq, af = P.rope_inv_freq(D, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    # transformers' rotary forward: cos/sin from position_ids, times the attention factor, cast to the input dtype
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos() * af).to(dtype), (emb.sin() * af).to(dtype)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    atol = 1e-5 if dtype == torch.float32 else 0.0
    _close(P.apply_rope(q, positions, inv_freq, af), ref_q, atol=atol, what="q")
    _close(P.apply_rope(k, positions, inv_freq, af), ref_k, atol=atol, what="k")


def test_apply_rope_matches_qwen3_rotary_embedding():
    cfg = _config(64, 10000.0, {"rope_type": "linear", "factor": 2.0}, 256)
    rotary = Qwen3RotaryEmbedding(cfg)
    x = torch.randn(2, 4, 9, 64, generator=torch.Generator().manual_seed(3))
    pos = torch.arange(100, 109)[None].expand(2, 9)
    cos, sin = rotary(x, pos)
    ref, _ = apply_rotary_pos_emb(x, x, cos, sin)
    inv_freq, af = P.rope_inv_freq(64, 10000.0, {"rope_type": "linear", "factor": 2.0})
    _close(P.apply_rope(x, pos, inv_freq, af), ref, atol=1e-5, what="rope vs Qwen3RotaryEmbedding")


def test_rope_scores_depend_only_on_relative_position():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 64, generator=gen, dtype=torch.float64), torch.randn(1, 64, generator=gen, dtype=torch.float64)
    inv_freq = P.rope_inv_freq(64)[0].double()

    def score(m, n):
        return (P.apply_rope(q, torch.tensor([m]), inv_freq) * P.apply_rope(k, torch.tensor([n]), inv_freq)).sum()

    for m, n, shift in [(5, 2, 100), (0, 7, 1000), (300, 299, 12345)]:
        assert torch.allclose(score(m, n), score(m + shift, n + shift), atol=1e-9), (m, n, shift)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)


def test_sinusoidal_positions_and_shift():
    pe = P.sinusoidal_positions(50, 16)
    p = torch.arange(50, dtype=torch.float64)[:, None]
    i = torch.arange(8, dtype=torch.float64)
    _close(pe[:, 0::2], torch.sin(p / 10000 ** (2 * i / 16)), atol=1e-6, what="sin")
    _close(pe[:, 1::2], torch.cos(p / 10000 ** (2 * i / 16)), atol=1e-6, what="cos")
    for k in (1, 5, 17):
        m = P.sinusoidal_shift_matrix(k, 16)
        _close(pe[:-k] @ m.T, pe[k:], atol=1e-5, what=f"shift {k}")


@pytest.mark.parametrize("n_heads", [1, 2, 4, 6, 8, 12, 16, 24, 32])
def test_alibi_slopes_match_paper_and_bloom(n_heads):
    got = P.alibi_slopes(n_heads)
    if n_heads & (n_heads - 1) == 0:  # power of two: the paper's geometric sequence starting at 2^(-8/n)
        ref = torch.tensor([2 ** (-8 * h / n_heads) for h in range(1, n_heads + 1)])
        _close(got, ref, atol=1e-7, what="paper slopes")
    # BLOOM's alibi tensor is slope_h * key position; dividing by the position recovers the slopes
    mask = torch.ones(1, 10)
    bloom = build_alibi_tensor(mask, n_heads, torch.float32)  # (H, 1, 10)
    _close(got, bloom[:, 0, 1], atol=1e-7, what="bloom slopes")


def test_alibi_bias_values():
    bias = P.alibi_bias(4, 5)
    slopes = P.alibi_slopes(4)
    assert bias.shape == (4, 5, 5)
    assert bias[2, 4, 1].item() == pytest.approx(-3 * slopes[2].item())
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)


def test_t5_buckets_match_transformers():
    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        for nb, md in [(32, 128), (16, 64), (8, 20)]:
            ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            got = P.t5_relative_bucket(rel, bidirectional, nb, md)
            assert torch.equal(got, ref), (bidirectional, nb, md, (got != ref).sum())


def test_relative_positions_clipped():
    rel = P.relative_positions(6, max_distance=2)
    assert rel[0, 5] == 2 and rel[5, 0] == -2 and rel[3, 2] == -1


def test_set_rope_scaling_matches_config_route():
    from course_utils import load_model

    model, _ = load_model("course-tiny", device="cpu")
    ids = torch.randint(4, 900, (1, 600), generator=torch.Generator().manual_seed(0))
    for scaling in ({"rope_type": "linear", "factor": 4.0}, {"rope_type": "yarn", "factor": 4.0},
                    {"rope_type": "dynamic", "factor": 1.0}):
        ref_model = copy.deepcopy(model)
        cfg = copy.deepcopy(model.config)
        cfg.rope_parameters = {"rope_theta": 10000.0, **scaling}
        if scaling["rope_type"] == "yarn":
            cfg.rope_parameters["original_max_position_embeddings"] = 256
        ref_model.model.rotary_emb = Qwen3RotaryEmbedding(cfg)
        with torch.no_grad():
            ref = ref_model(input_ids=ids).logits
            got = P.set_rope_scaling(model, scaling, seq_len=600)(input_ids=ids).logits
        _close(got, ref, atol=1e-5, what=scaling["rope_type"])
    P.set_rope_scaling(model, None)
    assert torch.equal(P._rotary(model).inv_freq, P.rope_inv_freq(64)[0])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="head_dim must be even"):
        P.rope_inv_freq(63)
    with pytest.raises(ValueError, match="rope_type must be one of"):
        P.rope_inv_freq(64, scaling={"rope_type": "magic", "factor": 2.0})
    with pytest.raises(ValueError, match="factor must be >= 1"):
        P.rope_inv_freq(64, scaling={"rope_type": "linear", "factor": 0.5})
    with pytest.raises(ValueError, match="factor must be >= 1"):
        P.rope_inv_freq(64, scaling={"rope_type": "yarn", "factor": 0.9, "original_max_position_embeddings": 256})
    with pytest.raises(ValueError, match="needs the keys"):
        P.rope_inv_freq(64, scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="high_freq_factor must be > low_freq_factor"):
        P.rope_inv_freq(64, scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                     "high_freq_factor": 1.0, "original_max_position_embeddings": 256})
    with pytest.raises(ValueError, match="base must be > 1"):
        P.rope_inv_freq(64, base=0.5)
    with pytest.raises(ValueError, match="partial_rotary_factor must be in"):
        P.rope_inv_freq(64, scaling={"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 1.5})
    with pytest.raises(TypeError, match="scaling must be None or a dict"):
        P.rope_inv_freq(64, scaling="linear")
    with pytest.raises(ValueError, match="inv_freq must have D/2"):
        P.apply_rope(torch.zeros(3, 8), torch.arange(3), torch.ones(3))
    with pytest.raises(ValueError, match="n_heads must be >= 1"):
        P.alibi_slopes(0)
    with pytest.raises(ValueError, match="d must be even"):
        P.sinusoidal_positions(4, 5)


def test_row_position_nll_matches_library_loss():
    from course_utils import load_model

    model, _ = load_model("course-tiny", device="cpu")
    rows = torch.randint(4, 900, (3, 40), generator=torch.Generator().manual_seed(1))
    per_row = P.row_position_nll(model, rows, batch_size=2)  # (N, T-1)
    assert per_row.shape == (3, 39)
    with torch.no_grad():
        for i in range(3):  # transformers' own shifted cross-entropy, one row at a time
            ref = model(input_ids=rows[i: i + 1], labels=rows[i: i + 1]).loss
            _close(per_row[i].mean(), ref, atol=1e-5, what=f"row {i}")
    _close(P.position_nll(model, rows), per_row.mean(0), atol=1e-5, what="position_nll")
    dyn = P.dynamic_position_nll(model, rows, per_row=True)  # rows shorter than L0: plain RoPE
    _close(dyn, per_row, atol=1e-5, what="dynamic per row")
    _close(P.dynamic_position_nll(model, rows), per_row.mean(0), atol=1e-5, what="dynamic mean")
    with pytest.raises(TypeError, match="rows must be a"):
        P.row_position_nll(model, rows[0])
    with pytest.raises(ValueError, match="batch_size"):
        P.row_position_nll(model, rows, batch_size=0)


def test_transformer_xl_scores_equal_the_four_terms():
    gen = torch.Generator().manual_seed(5)
    T, d, dh = 7, 8, 4
    x, wq, wk, wr = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in [(T, d), (d, dh), (d, dh), (d, dh)])
    u, v = torch.randn(dh, generator=gen, dtype=torch.float64), torch.randn(dh, generator=gen, dtype=torch.float64)
    got = P.transformer_xl_scores(x, wq, wk, wr, u, v)
    R = torch.tensor([[math.sin(m / 10000 ** (2 * (c // 2) / d)) if c % 2 == 0 else
                       math.cos(m / 10000 ** (2 * (c // 2) / d)) for c in range(d)] for m in range(T)],
                     dtype=torch.float64)  # sinusoid of each distance, written out
    for i in range(T):
        for j in range(T):
            if j > i:
                assert got[i, j] == float("-inf")
                continue
            qi, kj, rij = x[i] @ wq, x[j] @ wk, R[i - j] @ wr
            expected = qi @ kj + qi @ rij + u @ kj + v @ rij
            assert abs(got[i, j].item() - expected.item()) < 1e-5  # the sinusoid table is float32


def test_deberta_scores_equal_the_three_terms():
    gen = torch.Generator().manual_seed(6)
    T, d, dh, k = 9, 8, 4, 3
    x = torch.randn(T, d, generator=gen, dtype=torch.float64)
    wqc, wkc, wqr, wkr = (torch.randn(d, dh, generator=gen, dtype=torch.float64) for _ in range(4))
    P_rel = torch.randn(2 * k, d, generator=gen, dtype=torch.float64)
    got = P.deberta_scores(x, wqc, wkc, wqr, wkr, P_rel)

    def delta(i, j):  # He et al. 2021, eq. 3
        return 0 if i - j <= -k else 2 * k - 1 if i - j >= k else i - j + k
    for i in range(T):
        for j in range(T):
            expected = ((x[i] @ wqc) @ (x[j] @ wkc) + (x[i] @ wqc) @ (P_rel[delta(i, j)] @ wkr)
                        + (x[j] @ wkc) @ (P_rel[delta(j, i)] @ wqr)) / math.sqrt(3 * dh)
            assert abs(got[i, j].item() - expected.item()) < 1e-10


def test_rope_score_bound_written_out_and_pi_stretches_it():
    m, bound = P.rope_score_bound(16, 100.0, 512)
    theta = [100.0 ** (-2 * i / 16) for i in range(8)]
    for dist, b in list(zip(m.tolist(), bound.tolist()))[::37]:
        partial, total = 0j, 0.0
        for t in theta:  # S_j = sum_{i<j} exp(i m theta_i), averaged |S_j| over j = 1..D/2
            partial += complex(math.cos(dist * t), math.sin(dist * t))
            total += abs(partial)
        assert abs(b - total / 8) < 1e-5, dist  # the frequencies are float32, as transformers computes them
    assert bound[0] > bound[-1]  # it decays from distance 1
    m_pi, bound_pi = P.rope_score_bound(16, 100.0, 512, {"rope_type": "linear", "factor": 4.0})
    at = dict(zip(m.tolist(), bound.tolist()))
    for dist, b in zip(m_pi.tolist(), bound_pi.tolist()):
        if dist % 4 == 0 and dist // 4 in at:  # PI's bound at 4m equals the plain bound at m
            assert abs(b - at[dist // 4]) < 1e-5
