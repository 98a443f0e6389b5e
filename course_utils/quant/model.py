"""Quantizing a whole model: calibration inputs of every linear layer, the quantizers behind one signature,
model bytes, the held-out reply NLL, and quantization-aware training (QAT) with the straight-through estimator.

Weights are fake-quantized: each quantized matrix is stored back as the float matrix it dequantizes to, so any
method runs through the same model code, and accuracy and perplexity are those of the quantized weights. The bytes
are counted as a packed format would store them (model_bytes); speed needs real low-bit kernels
(benchmarks/bench_quant.py measures bitsandbytes').
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_number
from ..lora import dequantize_nf4, quantize_nf4
from .awq import awq_quantize
from .gptq import gptq_quantize, input_hessian
from .rtn import fake_quantize, relative_error


def _rtn(w, x, bits, group_size):
    return fake_quantize(w, bits, group_size), {}


def _gptq(w, x, bits, group_size):
    return gptq_quantize(w, input_hessian(x), bits, group_size), {}


def _awq(w, x, bits, group_size):
    w_hat, alpha = awq_quantize(w, x, bits, group_size)
    return w_hat, {"alpha": alpha}


def _nf4(w, x, bits, group_size):
    if bits != 4:
        raise ValueError(f"bits must be 4 for nf4, got {bits}")
    block = group_size or 64
    codes, absmax = quantize_nf4(w.float(), block)
    return dequantize_nf4(codes, absmax, w.shape, block), {}


# method -> f(w (out, in), x calibration inputs (N, in), bits, group_size) -> (Ŵ, info). rtn and nf4 ignore x.
QUANTIZERS = {"rtn": _rtn, "gptq": _gptq, "awq": _awq, "nf4": _nf4}
NEEDS_CALIBRATION = ("gptq", "awq")


def layer_errors(w: torch.Tensor, calibration: torch.Tensor, test: torch.Tensor, method: str, bits: int,
                 group_size: int | None = None) -> dict[str, float]:
    """One layer quantized by `method` (calibrated on `calibration` inputs (N, in)): its relative weight error and
    its relative output error on other inputs `test` (M, in), plus the quantized matrix ("w_hat")."""
    check_choice("method", method, list(QUANTIZERS))
    w = w.detach().float()
    w_hat, _ = QUANTIZERS[method](w, calibration.float(), bits, group_size)
    reference = test.float() @ w.T
    return {"weight_error": relative_error(w, w_hat), "w_hat": w_hat,
            "output_error": float((test.float() @ w_hat.T - reference).norm() / reference.norm())}


def quantized_linear_names(model: nn.Module, skip=("lm_head",)) -> list[str]:
    """Names of the nn.Linear layers a weight-only quantizer replaces (the tied embedding / lm_head stays float)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not any(s in n for s in skip)]


@torch.no_grad()
def collect_linear_inputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """{layer name: its inputs (tokens, in_features)} on one forward pass of the float model; padding dropped."""
    names = quantized_linear_names(model) if names is None else names
    keep = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool().flatten()
    inputs, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, output, name=name):
            inputs[name] = args[0].reshape(-1, args[0].shape[-1])[keep].float()
        hooks.append(modules[name].register_forward_hook(hook))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def quantize_model(model: nn.Module, method: str, bits: int, group_size: int | None = None,
                   inputs: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, dict[str, dict]]:
    """(a quantized copy of `model`, {layer: {"error": relative weight error, ...method info}}).

    inputs: collect_linear_inputs(...) of the float model; needed by gptq and awq.
    """
    check_choice("method", method, list(QUANTIZERS))
    if method in NEEDS_CALIBRATION and not inputs:
        raise ValueError(f"method={method!r} needs calibration inputs: pass inputs=collect_linear_inputs(model, ...)")
    quantized = copy.deepcopy(model)
    modules = dict(quantized.named_modules())
    report = {}
    for name in quantized_linear_names(quantized):
        w = modules[name].weight
        x = inputs.get(name) if inputs else None
        w_hat, info = QUANTIZERS[method](w.detach().float(), x, bits, group_size)
        report[name] = {"error": relative_error(w, w_hat), **info}
        w.data.copy_(w_hat.to(w.dtype))
    return quantized, report


def model_bytes(model: nn.Module, bits: int | None, group_size: int | None = None, scale_bits: int = 16) -> int:
    """Bytes of `model` stored with its quantized linear layers at `bits` per weight plus one `scale_bits` scale per
    row (group_size None) or per group, and every other parameter in 16 bits. bits None: everything in 16 bits."""
    modules = dict(model.named_modules())
    linear = {id(modules[n].weight) for n in quantized_linear_names(model)}
    total_bits = 0
    for p in {id(p): p for p in model.parameters()}.values():  # tied weights once
        if bits is not None and id(p) in linear:
            n_scales = p.shape[0] * (1 if group_size is None else p.shape[1] // group_size)
            total_bits += p.numel() * bits + n_scales * scale_bits
        else:
            total_bits += p.numel() * 16
    return total_bits // 8


def heldout_batch(tokenizer, n: int = 300, families: list[str] | None = None,
                  seed: int = 12345) -> dict[str, torch.Tensor]:
    """A padded batch (input_ids, attention_mask, labels) of `n` test-split task conversations of `families` (None:
    all): the text the chat model serves (the SFT model has forgotten its pretraining prose). labels are -100
    outside the replies."""
    from ..data import make_sft_conversations
    from ..sft import build_sft_example, collate

    check_int("n", n)
    examples = [build_sft_example(tokenizer, c) for c in make_sft_conversations(n, "test", seed=seed,
                                                                                families=families)]
    return collate(examples, tokenizer.pad_token_id)


@torch.no_grad()
def reply_nll(model: nn.Module, batch: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Mean negative log-likelihood of each conversation's reply tokens: (N,) float64. Perplexity = exp(mean)."""
    model.eval()
    out = []
    for i in range(0, len(batch["input_ids"]), batch_size):
        ids, mask, labels = (batch[k][i:i + batch_size] for k in ("input_ids", "attention_mask", "labels"))
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        target = labels[:, 1:]
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target.clamp_min(0), reduction="none")  # (B, T-1)
        keep = (target != -100).double()
        out.append((nll.double() * keep).sum(dim=1) / keep.sum(dim=1))
    return torch.cat(out)


def fake_quant_ste(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Fake quantization with the straight-through estimator: the forward value is Q(w), the gradient is the
    identity (d Q(w) / dw treated as 1), so the float weights keep learning below the grid."""
    return w + (fake_quantize(w.detach(), bits, group_size) - w).detach()


class _STEQuant(nn.Module):
    def __init__(self, bits, group_size):
        super().__init__()
        self.bits, self.group_size = bits, group_size

    def forward(self, w):
        return fake_quant_ste(w, self.bits, self.group_size)


def qat_train(model: nn.Module, tokenizer, bits: int, group_size: int | None = None, *, steps: int = 100,
              batch_size: int = 16, lr: float = 1e-3, n_train: int = 4000, seed: int = 0, checkpoint_dir=None,
              resume: bool = False, stop_at_step: int | None = None) -> list[float]:
    """Quantization-aware fine-tuning in place: every quantized linear layer computes with fake_quant_ste(weight)
    while the float weights train on SFT conversations; at the end the weights are left on the grid.
    checkpoint_dir / resume / stop_at_step as in train.train (safetensors every quarter of the run).
    Returns the per-step losses."""
    from torch.nn.utils import parametrize

    from ..data import make_sft_conversations
    from ..sft import build_sft_example, make_batch_fn, sft_loss_fn
    from ..train import TrainConfig, train

    check_int("bits", bits, 2, 8)
    check_int("steps", steps)
    check_number("lr", lr, 0, low_open=True)
    modules = dict(model.named_modules())
    names = quantized_linear_names(model)
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", _STEQuant(bits, group_size))
    try:
        examples = [build_sft_example(tokenizer, c) for c in make_sft_conversations(n_train, "train", seed=seed + 7)]
        data = make_batch_fn(examples, batch_size, tokenizer.pad_token_id, seed=seed)
        tcfg = TrainConfig(steps=steps, lr=lr, warmup=max(1, steps // 10), seed=seed, checkpoint_dir=checkpoint_dir,
                           save_every=0 if checkpoint_dir is None else max(1, steps // 4))
        result = train(model, sft_loss_fn, data, tcfg, resume=resume, stop_at_step=stop_at_step)
    finally:
        for name in names:
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=True)
    model.eval()
    return result.losses


__all__ = ["QUANTIZERS", "collect_linear_inputs", "fake_quant_ste", "heldout_batch", "model_bytes", "reply_nll",
           "qat_train", "quantize_model", "quantized_linear_names"]
