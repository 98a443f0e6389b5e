"""Norms and FFN: parity with torch.nn and transformers' Qwen3 layers; placements; bad inputs."""

import pytest
import torch
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3MLP, Qwen3RMSNorm

from course_utils import norms as N


def _close(got, ref, atol, rtol=0.0, what=""):
    diff = (got.double() - ref.double()).abs().max().item()
    assert torch.allclose(got.double(), ref.double(), atol=atol, rtol=rtol), f"{what} max_diff {diff:.3g}"


SHAPES = [(2, 5, 16), (3, 7, 64), (1, 1, 256), (4, 33)]


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_matches_torch(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    d = shape[-1]
    x = torch.randn(shape, generator=gen) * 3 + 1
    ref = torch.nn.LayerNorm(d, eps=1e-5)
    mine = N.LayerNorm(d, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(d, generator=gen))
        ref.bias.copy_(torch.randn(d, generator=gen))
        mine.load_state_dict(ref.state_dict())
    _close(mine(x), ref(x), atol=1e-5, what="LayerNorm")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_torch_and_qwen3(shape, dtype):
    gen = torch.Generator().manual_seed(7 + sum(shape))
    d = shape[-1]
    x = (torch.randn(shape, generator=gen) * 2).to(dtype)
    w = torch.randn(d, generator=gen)
    qwen = Qwen3RMSNorm(d, eps=1e-6).to(dtype)
    tnn = torch.nn.RMSNorm(d, eps=1e-6)
    mine = N.RMSNorm(d, eps=1e-6).to(dtype)
    with torch.no_grad():
        for m in (qwen, mine):
            m.weight.copy_(w.to(dtype))
        tnn.weight.copy_(w)
    got = mine(x)
    assert got.dtype == qwen(x).dtype
    # same algorithm as Qwen3RMSNorm (float32 inside, cast, times weight): equal in both dtypes
    _close(got, qwen(x), atol=1e-6 if dtype == torch.float32 else 0.0, what="vs Qwen3RMSNorm")
    # torch.nn.RMSNorm in float32 on the same input: float32 agrees tightly, bf16 within bf16 rounding
    ref = tnn(x.float())
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    _close(got.float(), ref, what="vs torch.nn.RMSNorm", **tol)


def test_batchnorm_matches_torch_train_and_eval():
    gen = torch.Generator().manual_seed(0)
    ref = torch.nn.BatchNorm1d(12, eps=1e-5, momentum=0.1)
    mine = N.BatchNorm(12)
    for _ in range(3):
        x = torch.randn(4, 9, 12, generator=gen) * 2 + 0.5
        _close(mine(x), ref(x.transpose(1, 2)).transpose(1, 2), atol=1e-5, what="train")
    _close(mine.running_mean, ref.running_mean, atol=1e-6, what="running_mean")
    _close(mine.running_var, ref.running_var, atol=1e-6, what="running_var")
    mine.eval(), ref.eval()
    x = torch.randn(2, 3, 12, generator=gen)
    _close(mine(x), ref(x.transpose(1, 2)).transpose(1, 2), atol=1e-5, what="eval")


@pytest.mark.parametrize("d_model,d_ff", [(16, 40), (64, 176), (256, 704)])
def test_swiglu_matches_qwen3_mlp(d_model, d_ff):
    cfg = Qwen3Config(hidden_size=d_model, intermediate_size=d_ff, hidden_act="silu")
    torch.manual_seed(d_model)
    ref = Qwen3MLP(cfg)
    mine = N.SwiGLUMLP(d_model, d_ff)
    mine.load_state_dict(ref.state_dict())  # same names: gate_proj, up_proj, down_proj
    x = torch.randn(3, 5, d_model, generator=torch.Generator().manual_seed(1))
    _close(mine(x), ref(x), atol=1e-6, what="SwiGLU vs Qwen3MLP")


@pytest.mark.parametrize("d", [64, 96, 768, 4096])
def test_swiglu_hidden_keeps_parameter_count(d):
    h = N.swiglu_hidden_size(d)
    relu = N.count_params(N.FFN(d, 4 * d))
    swiglu = N.count_params(N.SwiGLUMLP(d, h))
    assert relu == 8 * d * d
    assert abs(swiglu - relu) <= 3 * d, (swiglu, relu)


def test_activation_derivatives():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).float()
    curves = N.activation_curves(x)
    _close(curves["tanh"][1], 1 - torch.tanh(x) ** 2, atol=1e-6, what="tanh'")
    s = torch.sigmoid(x)
    _close(curves["sigmoid"][1], s * (1 - s), atol=1e-6, what="sigmoid'")
    _close(curves["SiLU / Swish"][1], s * (1 + x * (1 - s)), atol=1e-6, what="silu'")
    _close(curves["ReLU"][1], (x > 0).float(), atol=0.0, what="relu'")


@pytest.mark.parametrize("position", ["post", "pre", "sandwich", "deepnorm"])
def test_block_placements(position):
    torch.manual_seed(0)
    block = N.Block(32, 4, norm_position=position, n_layers=6)
    x = torch.randn(2, 7, 32)
    y = block(x)
    assert y.shape == x.shape
    # causal: changing the last token leaves earlier outputs unchanged
    x2 = x.clone()
    x2[:, -1] += 1.0
    _close(block(x2)[:, :-1], y[:, :-1], atol=1e-5, what="causality")
    if position in ("post", "deepnorm"):  # the output is normalized: unit RMS per token
        _close(y.pow(2).mean(-1), torch.ones(2, 7), atol=1e-3, what="normalized output")


def test_pre_norm_block_is_hand_composition():
    torch.manual_seed(1)
    b = N.Block(16, 2, norm_position="pre")
    x = torch.randn(1, 4, 16)
    h = x + b.attn(b.norm1(x))
    _close(b(x), h + b.mlp(b.norm2(h)), atol=1e-6, what="pre-norm")


def test_deepnorm_constants():
    alpha, beta = N.deepnorm_constants(12)
    assert alpha == pytest.approx(24 ** 0.25) and beta == pytest.approx(96 ** -0.25)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="eps must be > 0"):
        N.RMSNorm(8, eps=0.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        N.LayerNorm(8, eps=-1e-5)
    with pytest.raises(ValueError, match="norm_position must be one of"):
        N.Block(16, 2, norm_position="middle")
    with pytest.raises(ValueError, match="activation must be one of"):
        N.FFN(8, 16, activation="swish2")
    with pytest.raises(ValueError, match="last dim must be d=8"):
        N.RMSNorm(8)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="d must be >= 1"):
        N.LayerNorm(0)
    with pytest.raises(ValueError, match="d_model=10 must be divisible"):
        N.Block(10, 4)


def test_tinylm_embed_std_sets_the_embedding_scale():
    for std in (0.02, 1.0):
        torch.manual_seed(0)
        model = N.TinyLM(500, d_model=64, n_layers=2, max_len=32, embed_std=std)
        for table in (model.embed.weight, model.pos.weight):
            torch.testing.assert_close(table.std().item(), std, rtol=0.1, atol=0.0)
    torch.manual_seed(0)
    default = N.TinyLM(500, d_model=64, n_layers=2, max_len=32)
    assert abs(default.embed.weight.std().item() - 0.02) < 0.002
    rows = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    small = N.grad_norms_at_init("pre", 3, rows, 500, seed=1)
    assert small == N.grad_norms_at_init("pre", 3, rows, 500, seed=1, embed_std=0.02)
    assert small != N.grad_norms_at_init("pre", 3, rows, 500, seed=1, embed_std=1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_tinylm_bad_embed_std_names_the_argument(bad):
    with pytest.raises(ValueError, match="embed_std"):
        N.TinyLM(500, embed_std=bad)


def test_residual_updates_by_hand():
    torch.manual_seed(0)
    model = N.TinyLM(50, d_model=16, n_layers=3, n_heads=2, norm_position="pre", max_len=8).eval()
    rows = torch.randint(0, 50, (2, 8))
    stats = N.residual_updates(model, rows)
    x = model.embed(rows) + model.pos(torch.arange(8))
    for i, block in enumerate(model.blocks):  # written out: one block at a time, per token, then averaged
        out = block(x)
        rel = torch.stack([(out[b, t] - x[b, t]).norm() / x[b, t].norm() for b in range(2) for t in range(8)]).mean()
        cos = torch.stack([out[b, t] @ x[b, t] / (out[b, t].norm() * x[b, t].norm())
                           for b in range(2) for t in range(8)]).mean()
        assert abs(stats["relative_change"][i] - rel.item()) < 1e-5 and abs(stats["cosine"][i] - cos.item()) < 1e-5
        x = out


def test_train_tiny_lm_can_return_its_model():
    rows = torch.randint(0, 30, (16, 8), generator=torch.Generator().manual_seed(0))
    losses, model = N.train_tiny_lm("post", rows, 30, steps=3, lr=1e-3, n_layers=2, d_model=16, n_heads=2,
                                    return_model=True)
    assert len(losses) == 3 and isinstance(model, N.TinyLM) and not model.training
    assert losses == N.train_tiny_lm("post", rows, 30, steps=3, lr=1e-3, n_layers=2, d_model=16, n_heads=2)


def test_gated_attention_float64_and_zero_gate_weights_halve_the_output():
    gen = torch.Generator().manual_seed(5)
    attn = N.CausalSelfAttention(8, 2, gated=True).double()
    x = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    q, k, v = (lin(x).view(2, 5, 2, 4).transpose(1, 2) for lin in (attn.q_proj, attn.k_proj, attn.v_proj))
    w = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    ref = attn.o_proj((w @ v).transpose(1, 2).reshape(2, 5, 8) * torch.sigmoid(attn.gate_proj(x)))
    assert (attn(x) - ref).abs().max().item() < 1e-10
    attn.keep_weights = True
    assert (attn(x) - ref).abs().max().item() < 1e-10 and (attn.weights - w).abs().max().item() < 1e-12
    with torch.no_grad():
        attn.gate_proj.weight.zero_()  # sigmoid(0) = 1/2 everywhere
    plain = N.CausalSelfAttention(8, 2).double()
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if not k.startswith("gate_proj")})
    assert (attn(x) - 0.5 * plain(x)).abs().max().item() < 1e-10


def test_sink_statistics_on_a_tiny_lm():
    from course_utils import attention as A

    rows = torch.randint(0, 30, (3, 20), generator=torch.Generator().manual_seed(0))
    model = N.TinyLM(30, d_model=16, n_layers=2, n_heads=2, max_len=20, gated=True)
    stats = A.sink_statistics(model, rows, skip=4)
    assert stats["first_token_weight"].shape == (2, 2) and ((stats["first_token_weight"] > 0) & (stats["first_token_weight"] < 1)).all()
    assert abs(stats["uniform"] - sum(1 / (i + 1) for i in range(4, 20)) / 16) < 1e-12
    assert stats["massive_first"].shape == (2,) and (stats["gate_mean"] > 0).all() and (stats["gate_mean"] < 1).all()
    assert all(b.attn.weights is None and not b.attn.keep_weights for b in model.blocks)  # left as it found them
    plain = N.TinyLM(30, d_model=16, n_layers=2, n_heads=2, max_len=20)
    assert torch.isnan(A.sink_statistics(plain, rows)["gate_mean"]).all()
    with pytest.raises(ValueError, match="skip"):
        A.sink_statistics(model, rows, skip=20)
