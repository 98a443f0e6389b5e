"""Memory and CPU speed of quantized weights: course-tiny-sft and a randomly initialised Qwen3-0.6B-shaped model, in
float32, bfloat16, bitsandbytes' LLM.int8() (Linear8bitLt, outlier threshold 6) and NF4 (Linear4bit, double
quantization, bfloat16 compute), every linear layer but the tied embedding / lm_head replaced; the embedding and the
norms stay in bfloat16.

    python benchmarks/bench_quant.py            # about 10 minutes on 2 CPU cores

Per format: the bytes of the weights as stored in memory (parameters and buffers, quantization constants included),
and the time per generated token (greedy, batch 1, KV cache, 16-token prompt, 32 new tokens; median of 3 runs after
one warm-up). Notebook 11 prints the table; fake-quantized models (lecture 11's quantizers) compute in float32 and run
at float32 speed. Results: benchmarks/results/quant_speed.json.

Measured on 2 CPU cores (weights MiB, ms per token):
    course-tiny-sft     float32 12.2, 1.9   bfloat16 6.1, 2.0   int8 3.3, 6.3   nf4 1.9, 4.7
    Qwen3-0.6B-shaped   float32 2273.8, 149.9   bfloat16 1136.9, 80.3   int8 718.2, 73.3   nf4 513.5, 367.4
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time

import torch
from torch import nn

import course_utils as cu
from course_utils.lora import quantize_model_nf4
from course_utils.memory import KNOWN_MODELS

OUT = cu.env.REPO_ROOT / "benchmarks" / "results" / "quant_speed.json"


def to_int8(model: nn.Module, threshold: float = 6.0) -> nn.Module:
    """Every nn.Linear but lm_head as bitsandbytes' Linear8bitLt (int8 row-wise weights, LLM.int8() outliers)."""
    import bitsandbytes as bnb

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and name != "lm_head":
                q = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                        has_fp16_weights=False, threshold=threshold)
                q.weight = bnb.nn.Int8Params(child.weight.data.float().contiguous(), requires_grad=False,
                                             has_fp16_weights=False)
                setattr(module, name, q.to("cpu"))
    return model


FORMATS = {  # the embedding (tied to lm_head) and the norms in bfloat16 in every format but float32
    "float32": lambda m: m.float(),
    "bfloat16": lambda m: m.to(torch.bfloat16),
    "int8 (LLM.int8)": lambda m: to_int8(m.to(torch.bfloat16)),
    "nf4": lambda m: quantize_model_nf4(m.to(torch.bfloat16), compute_dtype=torch.bfloat16),
}


def weight_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    for m in model.modules():  # bitsandbytes keeps NF4 absmax / int8 row scales outside the parameters
        state = getattr(getattr(m, "weight", None), "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in (state.absmax, getattr(state, "state2", None)
                                                                and state.state2.absmax) if isinstance(t, torch.Tensor))
        scb = getattr(getattr(m, "weight", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


@torch.no_grad()
def ms_per_token(model: nn.Module, vocab: int, new_tokens: int = 32, repeats: int = 3) -> float:
    ids = torch.randint(10, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    model.generate(ids, **kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.generate(ids, **kwargs)
        times.append((time.perf_counter() - t0) / new_tokens * 1000)
    return statistics.median(times)


def qwen3_shaped(name: str = "Qwen/Qwen3-0.6B") -> nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = {k: v for k, v in KNOWN_MODELS[name].items() if k not in ("model_type", "rope_theta")}
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(**cfg, eos_token_id=None, pad_token_id=0)).eval()


def main() -> None:
    tiny, _ = cu.load_model(str(cu.env.REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
    models = {"course-tiny-sft (3.2M)": tiny, "Qwen3-0.6B-shaped, random weights": qwen3_shaped()}
    rows = []
    for model_name, base in models.items():
        for fmt, convert in FORMATS.items():
            model = convert(copy.deepcopy(base)).eval()
            row = {"model": model_name, "format": fmt, "weight_bytes": weight_bytes(model),
                   "ms_per_token": round(ms_per_token(model, base.config.vocab_size), 2)}
            rows.append(row)
            print(row, flush=True)
            del model
    OUT.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                          f"{torch.get_num_threads()} threads", "torch": torch.__version__,
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
