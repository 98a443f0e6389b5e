"""LoRA and NF4 from scratch vs peft and bitsandbytes."""

import copy

import pytest
import torch
from torch import nn

from course_utils.lora import (LoRALinear, add_lora, bits_per_parameter, count_parameters, dequantize_nf4,
                               disable_cpu_weight_repacking, lora_param_count, merge_lora, nf4_codebook,
                               pack_4bit, quantize_model_nf4, quantize_nf4, unpack_4bit)

bnb = pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")
import bitsandbytes.functional as bnbF  # noqa: E402


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


class TwoLayer(nn.Module):
    def __init__(self, d=24, h=40):
        super().__init__()
        self.q_proj = nn.Linear(d, h)
        self.v_proj = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.v_proj(torch.relu(self.q_proj(x)))


def _peft_pair(seed, r=4, alpha=8, use_rslora=False):
    torch.manual_seed(seed)
    base = TwoLayer()
    ours = add_lora(copy.deepcopy(base), ["q_proj", "v_proj"], r=r, alpha=alpha, use_rslora=use_rslora, seed=seed)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                          use_rslora=use_rslora)
    theirs = peft.get_peft_model(copy.deepcopy(base), cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    for name in ("q_proj", "v_proj"):  # same A and B in both (B random so the adapter matters)
        mine = getattr(ours, name)
        lib = getattr(theirs.base_model.model, name)
        with torch.no_grad():
            mine.lora_B.weight.copy_(torch.randn(mine.lora_B.weight.shape, generator=gen))
            lib.lora_A["default"].weight.copy_(mine.lora_A.weight)
            lib.lora_B["default"].weight.copy_(mine.lora_B.weight)
    return ours, theirs


@pytest.mark.parametrize("seed,r,alpha,rs", [(0, 4, 8, False), (1, 8, 16, True), (2, 1, 3, False)])
def test_lora_matches_peft_outputs_grads_and_merge(seed, r, alpha, rs):
    ours, theirs = _peft_pair(seed, r, alpha, rs)
    x = torch.randn(5, 7, 24, generator=torch.Generator().manual_seed(seed))
    y1, y2 = ours(x), theirs(x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5, msg=lambda m: f"outputs: {m}")
    y1.square().sum().backward()
    y2.square().sum().backward()
    for name in ("q_proj", "v_proj"):
        mine, lib = getattr(ours, name), getattr(theirs.base_model.model, name)
        for ab in ("lora_A", "lora_B"):
            g1, g2 = getattr(mine, ab).weight.grad, getattr(lib, ab)["default"].weight.grad
            assert _max_diff(g1, g2) < 1e-4, f"{name}.{ab} grad max_diff {_max_diff(g1, g2)}"
    # trainable counts as peft reports them
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()
    merged_ours = merge_lora(copy.deepcopy(ours))
    merged_lib = copy.deepcopy(theirs).merge_and_unload()
    for name in ("q_proj", "v_proj"):
        a, b = getattr(merged_ours, name).weight, getattr(merged_lib, name).weight
        assert type(getattr(merged_ours, name)) is nn.Linear
        assert _max_diff(a, b) < 1e-5, f"merged {name} max_diff {_max_diff(a, b)}"
    torch.testing.assert_close(merged_ours(x), y1.detach(), atol=1e-4, rtol=1e-4)


def test_lora_starts_at_zero_delta_and_freezes_base():
    base = nn.Linear(32, 16)
    layer = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 32)
    assert torch.equal(layer(x), base(x)), "B = 0 must give delta W = 0 at the start"
    assert layer.delta_weight().abs().max().item() == 0
    assert not base.weight.requires_grad and layer.lora_A.weight.requires_grad
    assert layer.lora_A.weight.abs().max() > 0


def test_parameter_efficiency_table():
    assert lora_param_count(4096, 4096, 16) == 131_072
    assert lora_param_count(4096, 4096, 64) == 524_288
    assert abs(131_072 / 4096**2 - 0.0078125) < 1e-12


def test_add_lora_on_course_tiny_matches_peft_count():
    import course_utils as cu

    model, _ = cu.load_model("course-tiny", device="cpu")
    ours = add_lora(copy.deepcopy(model), "all-linear", r=8, alpha=16)
    theirs = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()


def test_bad_inputs():
    with pytest.raises(ValueError, match="r must be a positive int, got 0"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(ValueError, match="r must be a positive int"):
        add_lora(TwoLayer(), ["q_proj"], r=-2, alpha=1)
    with pytest.raises(ValueError, match=r"unknown module names \['k_proj'\]"):
        add_lora(TwoLayer(), ["q_proj", "k_proj"], r=2, alpha=4)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=0)
    with pytest.raises(TypeError, match="base must be an nn.Linear"):
        LoRALinear(nn.ReLU(), r=2, alpha=2)
    with pytest.raises(ValueError, match="multiple of blocksize=64"):
        quantize_nf4(torch.randn(10, 10))


def test_nf4_codebook_equals_bitsandbytes():
    ref = bnbF.get_4bit_type("nf4", device="cpu")[:16]
    assert _max_diff(nf4_codebook(), ref) < 2e-7, f"max_diff {_max_diff(nf4_codebook(), ref)}"
    assert (nf4_codebook() == 0).sum() == 1 and nf4_codebook()[0] == -1 and nf4_codebook()[-1] == 1


@pytest.mark.parametrize("shape,seed,scale", [((64, 64), 0, 1.0), ((128, 256), 1, 0.02), ((3, 1024), 2, 5.0)])
def test_quantize_nf4_matches_bitsandbytes(shape, seed, scale):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale
    packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
    codes, absmax = quantize_nf4(w, blocksize=64)
    assert torch.equal(unpack_4bit(packed), codes), "codes differ from bitsandbytes"
    assert torch.equal(pack_4bit(codes), packed.reshape(-1))
    assert _max_diff(absmax, state.absmax) == 0
    ours, lib = dequantize_nf4(codes, absmax, w.shape), bnbF.dequantize_4bit(packed, state)
    assert _max_diff(ours, lib) <= 1e-6 * scale, f"dequantized max_diff {_max_diff(ours, lib)}"


def test_bits_per_parameter():
    assert bits_per_parameter(64, double_quant=False) == 4.5
    assert abs(bits_per_parameter(64, double_quant=True) - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-12


def test_qlora_grads_correct_after_eval_forward():
    """DESIGN.md sec. 6: an eval/no-grad forward must not corrupt later QLoRA gradients (AVX512-BF16 repack)."""
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("up_proj", nn.Linear(128, 256, bias=False))
    base.add_module("act", nn.SiLU())
    base.add_module("down_proj", nn.Linear(256, 128, bias=False))
    qmodel = quantize_model_nf4(copy.deepcopy(base))  # disables the repack on every Linear4bit it makes
    layers = [m for m in qmodel.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 and all(not m.support_avx512bf16_for_cpu for m in layers)
    for m in layers:  # the reference: a float model holding exactly the dequantized weights
        m.support_avx512bf16_for_cpu = True
    assert disable_cpu_weight_repacking(qmodel) == 2
    ref = copy.deepcopy(base)
    with torch.no_grad():
        for name in ("up_proj", "down_proj"):
            q = getattr(qmodel, name)
            getattr(ref, name).weight.copy_(bnbF.dequantize_4bit(q.weight.data, q.weight.quant_state))
    add_lora(qmodel, ["up_proj", "down_proj"], r=4, alpha=8, seed=3)
    add_lora(ref, ["up_proj", "down_proj"], r=4, alpha=8, seed=3)
    gen = torch.Generator().manual_seed(5)
    for model in (qmodel, ref):
        for name in ("up_proj", "down_proj"):
            with torch.no_grad():
                getattr(model, name).lora_B.weight.copy_(torch.randn(getattr(model, name).lora_B.weight.shape,
                                                                     generator=torch.Generator().manual_seed(7)))
    x = torch.randn(6, 128, generator=gen)
    qmodel.eval()
    with torch.no_grad():  # the trap: an inference pass before training
        qmodel(x)
    qmodel.train()
    for model in (qmodel, ref):
        model(x).square().mean().backward()
    for name in ("up_proj", "down_proj"):
        g, g_ref = getattr(qmodel, name).lora_A.weight.grad, getattr(ref, name).lora_A.weight.grad
        rel = ((g - g_ref).norm() / g_ref.norm()).item()
        assert rel < 1e-4, f"{name} lora_A grad relative error {rel:.3g} after an eval forward"
