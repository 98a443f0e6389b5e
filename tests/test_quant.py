"""Parity and bad-input tests for course_utils.quant (lecture 11).

References: bitsandbytes' int8 vector-wise quantization and its LLM.int8() layer (Linear8bitLt with an outlier
threshold) on CPU, an independent float64 Optimal-Brain-Quantizer loop written from the GPTQ paper (explicit inverse
Hessians of the remaining columns, no Cholesky rows, no lazy blocks), hand-worked grids and byte counts.
"""

import pytest
import torch

from course_utils import quant
from course_utils.quant import rtn


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(7, 64), (33, 256)])
def test_int8_absmax_equals_bitsandbytes_vectorwise(shape):
    import bitsandbytes.functional as bnbf

    w = torch.randn(*shape, generator=_gen(1)) * 0.05
    codes, scales = quant.quantize_absmax(w, bits=8)
    cb, scb, _ = bnbf.int8_vectorwise_quant(w)
    assert torch.allclose(scales.flatten() * 127, scb, rtol=1e-6)
    diff = (codes.int() - cb.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.999  # a tie may round either way
    back = bnbf.int8_vectorwise_dequant(cb, scb)
    assert torch.allclose(quant.dequantize_absmax(codes, scales), back, atol=scales.max().item())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16, -1])
def test_absmax_and_zeropoint_grids_hand_worked(bits, group_size):
    w = torch.randn(6, 32, generator=_gen(bits))
    codes, scales = quant.quantize_absmax(w, bits, group_size)
    qmax = 2 ** (bits - 1) - 1
    assert codes.abs().max() <= qmax and codes.abs().max() == qmax  # the largest weight lands on the grid's end
    expected_scales = {None: (6, 1), 16: (6, 2), -1: (1, 1)}[group_size]
    assert tuple(scales.shape) == expected_scales
    w_hat = quant.dequantize_absmax(codes, scales, group_size)
    per_weight_scale = rtn._grouped(torch.ones_like(w), group_size) * scales.reshape(-1, 1)
    assert ((w - w_hat).abs() <= per_weight_scale.reshape(w.shape) / 2 + 1e-6).all()  # rounding: half a step
    zcodes, zscales, zeros = quant.quantize_zeropoint(w, bits, group_size)
    assert zcodes.min() >= 0 and zcodes.max() <= 2 ** bits - 1
    zw_hat = quant.dequantize_zeropoint(zcodes, zscales, zeros, group_size)
    zstep = (rtn._grouped(torch.ones_like(w), group_size) * zscales.reshape(-1, 1)).reshape(w.shape)
    assert ((w - zw_hat).abs() <= zstep / 2 + 1e-5).all()


def test_three_bit_grid_by_hand():
    w = torch.tensor([[0.3, -0.15, 0.05, 0.0]])
    codes, scales = quant.quantize_absmax(w, bits=3)  # qmax 3: scale 0.1
    assert torch.allclose(scales, torch.tensor([[0.1]]))
    assert codes.tolist() == [[3, -2, 0, 0]]  # -1.5 rounds half to even, 0.5 too


def test_llm_int8_matmul_equals_bitsandbytes_linear8bitlt():
    import bitsandbytes as bnb

    gen = _gen(3)
    w = torch.randn(48, 64, generator=gen) * 0.1
    x = torch.randn(10, 64, generator=gen)
    x[:, [5, 40]] *= 20  # two outlier channels
    layer = bnb.nn.Linear8bitLt(64, 48, bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    with torch.no_grad():
        expected = layer.to("cpu")(x)
    y, cols = quant.llm_int8_matmul(x, w, threshold=6.0)
    assert set(cols.tolist()) >= {5, 40}
    import bitsandbytes.functional as bnbf
    assert cols.tolist() == bnbf.int8_vectorwise_quant(x, threshold=6.0)[2].tolist()
    assert (y - expected).abs().max() < 1e-2 * expected.abs().max()
    plain = quant.w8a8_matmul(x, w)
    exact = x @ w.T
    assert (y - exact).norm() < 0.5 * (plain - exact).norm()  # the decomposition removes most of the error


def test_smoothquant_keeps_the_product_and_reduces_per_tensor_w8a8_error():
    gen = _gen(4)
    w = torch.randn(32, 64, generator=gen, dtype=torch.float64) * 0.1
    x = torch.randn(256, 64, generator=gen, dtype=torch.float64)
    x[:, :3] *= 50
    s = quant.smoothquant_scales(quant.activation_absmax(x), w, alpha=0.5)
    assert torch.allclose((x / s) @ (w * s).T, x @ w.T)
    exact = x @ w.T
    plain = quant.w8a8_matmul(x.float(), w.float(), "tensor").double()
    smooth = quant.w8a8_matmul((x / s).float(), (w * s).float(), "tensor").double()
    assert (smooth - exact).norm() < 0.5 * (plain - exact).norm()


# ---- GPTQ --------------------------------------------------------------------------------------------

def _obq_reference(w, H, bits, group_size, damp=0.01):
    """Column-by-column OBS in float64 with explicit inverses of the Hessian of the remaining columns."""
    W, H = w.double().clone(), H.double().clone()
    n = W.shape[1]
    H = H + damp * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    qmax = 2 ** (bits - 1) - 1
    scale = W.abs().amax(1) / qmax
    Q = torch.zeros_like(W)
    for q in range(n):
        if group_size is not None and q % group_size == 0:
            scale = W[:, q:q + group_size].abs().amax(1) / qmax
        Hinv = torch.linalg.inv(H[q:, q:])  # remaining columns q..n-1
        Q[:, q] = torch.round(W[:, q] / scale).clamp(-qmax, qmax) * scale
        err = (W[:, q] - Q[:, q]) / Hinv[0, 0]
        W[:, q:] -= err[:, None] * Hinv[0][None, :]
    return Q


@pytest.mark.parametrize("bits,group_size,block_size", [(4, None, 128), (3, None, 16), (4, 16, 32), (2, 32, 128)])
def test_gptq_equals_float64_obq_loop(bits, group_size, block_size):
    gen = _gen(bits * 10 + (group_size or 0))
    w = torch.randn(12, 64, generator=gen)
    x = torch.randn(500, 64, generator=gen) @ torch.randn(64, 64, generator=gen) * 0.3  # correlated inputs
    H = quant.input_hessian(x)
    ours = quant.gptq_quantize(w, H, bits, group_size, block_size=block_size)
    ref = _obq_reference(w, H, bits, group_size)
    scale = w.abs().max() / (2 ** (bits - 1) - 1)
    mismatch = ((ours.double() - ref).abs() > 1e-4).float().mean().item()
    assert mismatch < 0.01, mismatch  # a rounding tie can flip one code and change the columns after it
    assert (ours.double() - ref).abs().max() < 4 * scale


def test_gptq_with_identity_hessian_is_round_to_nearest():
    w = torch.randn(8, 32, generator=_gen(5))
    assert torch.allclose(quant.gptq_quantize(w, torch.eye(32), bits=4), quant.fake_quantize(w, 4), atol=1e-6)


def test_gptq_lowers_the_layer_output_error_on_fresh_inputs():
    gen = _gen(6)
    mix = torch.randn(64, 64, generator=gen)
    calib, fresh = (torch.randn(n, 64, generator=gen) @ mix for n in (400, 400))
    w = torch.randn(32, 64, generator=gen)
    ours = quant.gptq_quantize(w, quant.input_hessian(calib), bits=3)
    rtn_err = ((fresh @ (quant.fake_quantize(w, 3) - w).T) ** 2).mean()
    gptq_err = ((fresh @ (ours - w).T) ** 2).mean()
    assert gptq_err < 0.7 * rtn_err


def test_awq_protects_salient_channels():
    gen = _gen(7)
    x = torch.randn(512, 64, generator=gen)
    x[:, :4] *= 30  # a few channels see large activations
    w = torch.randn(32, 64, generator=gen)
    w_hat, alpha = quant.awq_quantize(w, x, bits=3)
    rtn_err = ((x @ (quant.fake_quantize(w, 3) - w).T) ** 2).mean()
    awq_err = ((x @ (w_hat - w).T) ** 2).mean()
    assert alpha > 0 and awq_err < 0.8 * rtn_err


# ---- whole model -------------------------------------------------------------------------------------

def test_model_bytes_hand_worked(tiny):
    model, _ = tiny
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert quant.model_bytes(model, None) == 2 * n
    linear = sum(dict(model.named_modules())[name].weight.numel() for name in quant.quantized_linear_names(model))
    rows = sum(dict(model.named_modules())[name].weight.shape[0] for name in quant.quantized_linear_names(model))
    assert quant.model_bytes(model, 4) == (2 * (n - linear) * 8 + 4 * linear + 16 * rows) // 8


def test_quantize_model_methods_and_qat_stay_on_the_grid(tiny):
    model, tok = tiny
    batch = quant.heldout_batch(tok, 8)
    inputs = quant.collect_linear_inputs(model, batch["input_ids"], batch["attention_mask"])
    name = quant.quantized_linear_names(model)[0]
    assert inputs[name].shape[0] == int(batch["attention_mask"].sum())  # padding dropped
    for method in quant.QUANTIZERS:
        q, report = quant.quantize_model(model, method, 4, inputs=inputs)
        assert set(report) == set(quant.quantized_linear_names(model))
        assert 0 < report[name]["error"] < 0.5
    rtn_model, _ = quant.quantize_model(model, "rtn", 3)
    w = dict(rtn_model.named_modules())[name].weight
    assert max(len(torch.unique(row)) for row in w) <= 7  # 3 bits symmetric: 7 levels per row
    losses = quant.qat_train(rtn_model, tok, bits=3, steps=2, batch_size=2, n_train=8)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    w = dict(rtn_model.named_modules())[name].weight
    assert max(len(torch.unique(row)) for row in w) <= 7  # QAT leaves the weights on the grid
    nll = quant.reply_nll(model, batch)
    assert nll.shape == (8,) and (nll > 0).all()


def test_fake_quant_ste_passes_the_gradient_straight_through():
    w = torch.randn(4, 8, requires_grad=True)
    out = quant.fake_quant_ste(w, 3)
    assert torch.allclose(out, quant.fake_quantize(w.detach(), 3))
    (out * torch.arange(32.0).reshape(4, 8)).sum().backward()
    assert torch.equal(w.grad, torch.arange(32.0).reshape(4, 8))


def test_bad_inputs_name_the_argument(tiny):
    w = torch.randn(4, 8)
    for call, words in [
        (lambda: quant.quantize_absmax(w, bits=1), "bits"),
        (lambda: quant.quantize_absmax(w, bits=4, group_size=3), "group_size"),
        (lambda: quant.quantize_absmax(w.long(), bits=4), "w"),
        (lambda: quant.dequantize_absmax(*quant.quantize_absmax(w, 4), group_size=4), "scales"),
        (lambda: quant.gptq_quantize(w, torch.eye(7)), "hessian"),
        (lambda: quant.gptq_quantize(w, torch.eye(8), damp=0), "damp"),
        (lambda: quant.awq_quantize(w, torch.randn(5, 7)), "x"),
        (lambda: quant.llm_int8_matmul(torch.randn(3, 8), w, threshold=-1), "threshold"),
        (lambda: quant.smoothquant_scales(torch.ones(8), w, alpha=2), "alpha"),
        (lambda: quant.quantize_model(tiny[0], "gptq", 4), "inputs"),
        (lambda: quant.quantize_model(tiny[0], "int3", 4), "method"),
        (lambda: quant.fake_quantize_activations(torch.randn(3, 8), granularity="channel"), "granularity"),
    ]:
        with pytest.raises((ValueError, TypeError), match=words):
            call()


def test_layer_errors_are_the_rounding_errors_of_that_layer():
    gen = _gen(8)
    w, calib, test = torch.randn(16, 32, generator=gen), torch.randn(64, 32, generator=gen), torch.randn(50, 32, generator=gen)
    report = quant.layer_errors(w, calib, test, "rtn", 3, 16)
    w_hat = quant.fake_quantize(w, 3, 16)
    assert torch.equal(report["w_hat"], w_hat)
    assert abs(report["weight_error"] - ((w - w_hat).norm() / w.norm()).item()) < 1e-6
    assert abs(report["output_error"] - ((test @ (w_hat - w).T).norm() / (test @ w.T).norm()).item()) < 1e-6
    assert quant.layer_errors(w, calib, test, "gptq", 3)["output_error"] > 0


def test_resumed_qat_equals_an_uninterrupted_run(tiny, tmp_path):
    model, tok = tiny
    kwargs = dict(bits=3, steps=4, batch_size=2, n_train=8)
    whole, _ = quant.quantize_model(model, "rtn", 3)
    quant.qat_train(whole, tok, **kwargs)
    cut, _ = quant.quantize_model(model, "rtn", 3)
    quant.qat_train(cut, tok, **kwargs, checkpoint_dir=tmp_path, stop_at_step=2)
    resumed, _ = quant.quantize_model(model, "rtn", 3)
    quant.qat_train(resumed, tok, **kwargs, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_weight_grid_plot_draws_every_grid_value_once_and_in_view():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils.plotting import plot_weight_grid

    w = torch.randn(1, 512, generator=torch.Generator().manual_seed(0)) * 0.05
    w[0, 0] = 0.3  # an outlier sets the absmax scale, far from the bulk of the histogram
    w_hat = quant.fake_quantize(w, 4)
    levels = torch.unique(w_hat[0])
    fig, ax = plot_weight_grid(w[0], w_hat[0])
    xs = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()}  # axvlines or one collection
                | {float(seg[0][0]) for c in ax.collections for seg in c.get_segments()})
    assert len(xs) == len(levels) and max(abs(a - b) for a, b in zip(xs, levels.tolist())) < 1e-6
    low, high = ax.get_xlim()
    assert low <= levels.min().item() and levels.max().item() <= high  # the outlier's value too
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["float weights of the row",
                                                                   "values after quantization"]
    plt.close(fig)
