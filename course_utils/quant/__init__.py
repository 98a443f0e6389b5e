"""Post-training quantization (量化) from scratch: round-to-nearest grids, activation outliers (LLM.int8,
SmoothQuant), GPTQ, AWQ, quantization-aware training, and applying them to a whole model.

    codes, scales = quantize_absmax(w, bits=4, group_size=64)     # symmetric, per output row (per group if given)
    w_hat = dequantize_absmax(codes, scales, group_size=64)
    w_hat = gptq_quantize(w, input_hessian(x), bits=4)              # same grid, rounding errors compensated
    w_hat, alpha = awq_quantize(w, x, bits=4)                       # same grid, activation-aware channel scales

Modules: rtn (the grids), outliers (activation outliers and the two W8A8 remedies), gptq, awq, model (calibration,
whole-model quantization, QAT, bytes).
"""

from .awq import awq_quantize
from .gptq import gptq_quantize, input_hessian
from .model import (QUANTIZERS, collect_linear_inputs, fake_quant_ste, heldout_batch, layer_errors, model_bytes,
                    qat_train, quantize_model, quantized_linear_names, reply_nll)
from .outliers import (activation_absmax, fake_quantize_activations, llm_int8_matmul, smoothquant_scales,
                       w8a8_matmul)
from .rtn import (dequantize_absmax, dequantize_zeropoint, fake_quantize, quantize_absmax, quantize_zeropoint,
                  relative_error)

__all__ = ["QUANTIZERS", "activation_absmax", "awq_quantize", "collect_linear_inputs", "dequantize_absmax",
           "dequantize_zeropoint", "fake_quant_ste", "fake_quantize", "fake_quantize_activations", "gptq_quantize",
           "heldout_batch", "input_hessian", "layer_errors", "llm_int8_matmul", "model_bytes", "qat_train",
           "quantize_absmax", "quantize_model", "quantize_zeropoint", "quantized_linear_names", "relative_error",
           "reply_nll",
           "smoothquant_scales", "w8a8_matmul"]
