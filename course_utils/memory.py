"""GPU-memory accounting for training: parameters, gradients, optimizer states, activations."""

from __future__ import annotations

# Public architecture configs (from each model's config.json on the Hugging Face hub), as plain data.
# Keys follow transformers' config names so `AutoConfig.for_model(model_type, **cfg)` rebuilds them.
KNOWN_MODELS: dict[str, dict] = {
    "Qwen/Qwen3-0.6B": dict(
        model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-1.7B": dict(
        model_type="qwen3", hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, intermediate_size=6144, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-4B": dict(
        model_type="qwen3", hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=9728, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3", hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=12288, vocab_size=151936,
        tie_word_embeddings=False, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-14B": dict(
        model_type="qwen3", hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, intermediate_size=17408, vocab_size=151936,
        tie_word_embeddings=False, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "meta-llama/Llama-3.1-8B": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256,
        tie_word_embeddings=False, max_position_embeddings=131072, rope_theta=500_000.0,
        rms_norm_eps=1e-5, attention_bias=False, qk_norm=False),
    "meta-llama/Llama-3.2-1B": dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
        tie_word_embeddings=True, max_position_embeddings=131072, rope_theta=500_000.0,
        rms_norm_eps=1e-5, attention_bias=False, qk_norm=False),
    "Qwen/Qwen2.5-7B": dict(
        model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, head_dim=128, intermediate_size=18944, vocab_size=152064,
        tie_word_embeddings=False, max_position_embeddings=131072, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=True, qk_norm=False),
    "Qwen/Qwen2.5-0.5B": dict(
        model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, head_dim=64, intermediate_size=4864, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=True, qk_norm=False),
}

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .checks import check_choice, check_int

METHODS = ("full", "lora", "qlora")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPUS_GB = {"T4 16 GB": 16, "RTX 4090 24 GB": 24, "A100 40 GB": 40, "A100 80 GB": 80, "H100 80 GB": 80}
_ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
              "intermediate_size", "vocab_size", "tie_word_embeddings")


@dataclass
class MemoryBreakdown:
    """Training memory in bytes, by component; `total` is their sum, `peak` the overlap-aware estimate."""

    params: int  # weights (4-bit codes + constants for QLoRA's quantized linears)
    grads: int  # gradients of the trainable parameters
    optimizer: int  # optimizer states (+ fp32 master weights when used)
    activations: int  # tensors saved for backward (incl. the fp32 log-softmax of the logits)
    n_params: int  # parameter count of the model (adapters included)
    trainable_params: int  # parameters that receive gradients
    overhead: int = 0  # transient buffers at the worst moment (logit gradients, optimizer temporaries)
    peak: int | None = None  # estimated / measured peak of one training step (grads and activations overlap only partly)
    assumptions: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.overhead

    def as_dict(self, unit: float = 2**30) -> dict:
        """Components in `unit` (GiB by default)."""
        keys = ("params", "grads", "optimizer", "activations", "overhead", "total")
        out = {k: getattr(self, k) / unit for k in keys}
        if self.peak is not None:
            out["peak"] = self.peak / unit
        return out

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.as_dict().items())
        return f"MemoryBreakdown(GiB: {parts}; {self.trainable_params:,} of {self.n_params:,} params trainable)"


# ---- architecture and parameter counts --------------------------------------------------------------


def architecture(model_or_shape) -> dict:
    """A plain dict of the architecture fields from a KNOWN_MODELS key, a dict, a transformers config or a model."""
    if isinstance(model_or_shape, str):
        if model_or_shape not in KNOWN_MODELS:
            raise ValueError(f"model_or_shape must be one of {list(KNOWN_MODELS)} (or a config/model), "
                             f"got {model_or_shape!r}")
        cfg = dict(KNOWN_MODELS[model_or_shape])
    elif isinstance(model_or_shape, dict):
        cfg = dict(model_or_shape)
    elif isinstance(model_or_shape, nn.Module) and hasattr(model_or_shape, "config"):
        cfg = model_or_shape.config.to_dict()
    elif hasattr(model_or_shape, "to_dict"):
        cfg = model_or_shape.to_dict()
    else:
        raise TypeError(f"model_or_shape must be a KNOWN_MODELS key, a dict, a transformers config or a model "
                        f"with .config, got {type(model_or_shape).__name__}")
    if cfg.get("head_dim") is None and "hidden_size" in cfg and "num_attention_heads" in cfg:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if cfg.get("num_key_value_heads") is None:
        cfg["num_key_value_heads"] = cfg.get("num_attention_heads")
    missing = [k for k in _ARCH_KEYS if cfg.get(k) is None]
    if missing:
        raise ValueError(f"model_or_shape is missing architecture fields {missing}")
    cfg.setdefault("attention_bias", False)
    cfg.setdefault("qk_norm", cfg.get("model_type") == "qwen3")
    return cfg


def linear_shapes(arch: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear in one decoder layer."""
    h, d, i = arch["hidden_size"], arch["head_dim"], arch["intermediate_size"]
    q, kv = arch["num_attention_heads"] * d, arch["num_key_value_heads"] * d
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def count_params(model_or_shape) -> dict:
    """Parameter counts: {'total', 'embedding', 'lm_head', 'linear' (in decoder layers), 'non_linear', 'non_embedding'}."""
    a = architecture(model_or_shape)
    h, L, V = a["hidden_size"], a["num_hidden_layers"], a["vocab_size"]
    shapes = linear_shapes(a)
    linear = L * sum(i * o for i, o in shapes.values())
    bias = 0
    if a["attention_bias"]:  # qwen2: q/k/v bias; llama's attention_bias also adds one to o_proj
        bias = sum(shapes[n][1] for n in ("q_proj", "k_proj", "v_proj"))
        bias += h if a.get("model_type") == "llama" else 0
    norms = 2 * h + (2 * a["head_dim"] if a["qk_norm"] else 0)
    layers = linear + L * (bias + norms)
    embedding = V * h
    lm_head = 0 if a["tie_word_embeddings"] else V * h
    total = layers + h + embedding + lm_head
    return {"total": total, "embedding": embedding, "lm_head": lm_head, "linear": linear,
            "non_linear": total - linear, "non_embedding": total - embedding - lm_head}


def lora_params(model_or_shape, r: int = 16, targets=None) -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted linear, summed over the layers."""
    a = architecture(model_or_shape)
    targets = _check_targets(targets)
    check_int("lora_r", r)
    shapes = linear_shapes(a)
    return a["num_hidden_layers"] * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def _check_targets(targets) -> tuple[str, ...]:
    if targets is None or targets == "all-linear":
        return LINEAR_NAMES
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets) or not targets:
        raise ValueError(f"lora_targets must be None, 'all-linear' or a list of names from {LINEAR_NAMES}, got {targets!r}")
    unknown = [t for t in targets if t not in LINEAR_NAMES]
    if unknown:
        raise ValueError(f"lora_targets has unknown module names {unknown}; allowed: {LINEAR_NAMES}")
    return tuple(t for t in LINEAR_NAMES if t in targets)


# ---- activations ------------------------------------------------------------------------------------


def activation_bytes(arch: dict, *, batch_size: int, seq_len: int, act_bytes: int, trainable: dict,
                     lora_r: int = 0, flash_attention: bool = True, grad_checkpointing: bool = False) -> dict:
    """Bytes autograd saves for backward in one forward of a Llama/Qwen decoder (transformers' implementation).

    Adapted from Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    arXiv:2205.05198, sec. 4.1), redone op by op for RMSNorm (computed in fp32), QK-norm, RoPE, GQA,
    SwiGLU and frozen weights. trainable: {'base': bool (all weights train), 'lora': set of targeted linears}.
    Returns {'per_layer': [...], 'layers', 'head', 'total'} in bytes.
    """
    a = act_bytes
    h, i, H, KV, D = (arch[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                         "num_key_value_heads", "head_dim"))
    q, kv, V, L = H * D, KV * D, arch["vocab_size"], arch["num_hidden_layers"]
    N, T = batch_size * seq_len, seq_len  # tokens, sequence length
    full, lora = trainable["base"], set(trainable["lora"])
    trains = {n: full or n in lora for n in LINEAR_NAMES}  # does this linear own a trainable weight?

    def norm(width, rows, grad_in):  # transformers' RMSNorm: x.float() -> pow, rsqrt, mul -> to(dtype) -> * weight
        return (4 * width + 4 * rows if grad_in else 0) + (a * width if full else 0)

    def layer(g):  # g: does the hidden state entering the layer require grad? -> (bytes per token, g_out)
        b = norm(h, 1, g)
        g_norm = g or full
        if any(trains[n] for n in ("q_proj", "k_proj", "v_proj")):
            b += a * h  # the norm output, saved once as the input of q/k/v (and their lora_A)
        b += a * lora_r * sum(n in lora for n in ("q_proj", "k_proj", "v_proj"))  # lora_A outputs
        gq, gk, gv = (g_norm or trains[n] for n in ("q_proj", "k_proj", "v_proj"))
        if arch["qk_norm"]:
            b += norm(q, H, gq) + norm(kv, KV, gk)
        g_attn = gq or gk or gv
        if g_attn and flash_attention:  # SDPA saves q, k, v (after RoPE), out, and fp32 logsumexp
            b += a * (2 * q + 2 * kv) + 4 * H
        elif g_attn:  # eager: q, repeated k and v, fp32 softmax (+ its cast), and the transposed output
            rep = 1 if H == KV else H // KV
            b += a * (q + 2 * kv * rep) + 4 * H * T + (a * H * T if a != 4 else 0)
            b += a * q if trains["o_proj"] else 0
        b += a * lora_r if "o_proj" in lora else 0
        g1 = g or g_attn or trains["o_proj"]
        b += norm(h, 1, g1)
        if trains["gate_proj"] or trains["up_proj"]:
            b += a * h
        b += a * lora_r * sum(n in lora for n in ("gate_proj", "up_proj"))
        gg, gu = (g1 or full or trains[n] for n in ("gate_proj", "up_proj"))
        b += a * i * ((1 if gg else 0) + (1 if gu else 0) + (1 if gg else 0))  # silu(gate) saves gate; mul saves both
        b += a * i if trains["down_proj"] else 0  # input of down_proj
        b += a * lora_r if "down_proj" in lora else 0
        return b, g1 or gg or gu or trains["down_proj"]

    per_layer, g = [], full  # the embedding output requires grad only when the embedding trains
    for _ in range(L):
        b, g = layer(g)
        per_layer.append(b * N)
    head = norm(h, 1, g) * N + (a * h * N if full else 0)  # final norm (+ lm_head input)
    head += 4 * V * N + 8 * N  # fp32 log_softmax of the logits (saved by cross-entropy) + int64 labels
    head += 8 * N if full else 0  # token ids saved by the trainable embedding
    head += 2 * T * D * a if per_layer and (g or any(trains.values())) else 0  # RoPE cos/sin (shared, batch 1)
    layers, recompute = sum(per_layer), 0
    if grad_checkpointing:  # keep only each layer's input; backward recomputes one layer at a time (transient)
        layers, recompute = L * a * h * N, max(per_layer)
    return {"per_layer": per_layer, "layers": layers, "head": head, "total": layers + head, "recompute": recompute}


# ---- the estimator ----------------------------------------------------------------------------------


OPTIMIZERS = {  # name -> (states per trainable parameter, bytes per state or None = as the state dtype)
    "adamw": (2, None),
    "adamw_8bit": (2, 1),
    "sgd": (1, None),  # with momentum
    "sgd_no_momentum": (0, None),
}


def _qlora_linear_bytes(n_out: int, n_in: int, blocksize: int, double_quant: bool, blocksize2: int = 256) -> int:
    """Bytes of one NF4 linear as bitsandbytes stores it: packed codes + absmax (+ 2nd-level constants)."""
    n = n_in * n_out
    blocks = math.ceil(n / blocksize)
    codes = math.ceil(n / 2) + 16 * 4  # two codes per byte + the 16-entry fp32 NF4 table
    if double_quant:  # uint8 absmax, fp32 scale per 256 of them, 256-entry fp32 code table, fp32 offset
        return codes + blocks + 4 * math.ceil(blocks / blocksize2) + 256 * 4 + 4
    return codes + 4 * blocks


def estimate_training_memory(model_or_shape, method: str = "full", *, batch_size: int, seq_len: int,
                             dtype: str = "bf16", optimizer: str = "adamw", lora_r: int = 16, lora_targets=None,
                             grad_checkpointing: bool = False, master_weights: bool = False,
                             state_dtype: str | None = None,
                             grad_dtype: str | None = None, flash_attention: bool = True,
                             double_quant: bool = True, quant_blocksize: int = 64, lora_dtype: str | None = None,
                             zero_stage: int = 0, n_gpus: int = 1) -> MemoryBreakdown:
    """Predict one training step's memory (bytes per GPU) from the architecture alone.

    dtype: weights and activations ("bf16"|"fp16"|"fp32"); master_weights: keep an fp32 copy for the optimizer
    (classic mixed precision); otherwise optimizer states are in the weights' dtype (torch AdamW's behaviour)
    unless state_dtype says otherwise (e.g. "fp32" states without a master copy: the course notes' 12 B/param).
    method "qlora": linears in NF4 (+ double quantization), embeddings, norms and lm_head in `dtype`.
    zero_stage 1/2/3 shards optimizer / +grads / +params over n_gpus (activations are per GPU).
    """
    arch = architecture(model_or_shape)
    check_choice("method", method, METHODS)
    for name, v in (("dtype", dtype), ("grad_dtype", grad_dtype), ("lora_dtype", lora_dtype),
                    ("state_dtype", state_dtype)):
        if v is not None:
            check_choice(name, v, list(DTYPE_BYTES))
    check_choice("optimizer", optimizer, list(OPTIMIZERS))
    check_int("batch_size", batch_size)
    check_int("seq_len", seq_len)
    check_int("n_gpus", n_gpus)
    check_int("quant_blocksize", quant_blocksize)
    check_choice("zero_stage", zero_stage, (0, 1, 2, 3))
    targets = _check_targets(lora_targets)
    if method != "full":
        check_int("lora_r", lora_r)
    w = DTYPE_BYTES[dtype]
    g_bytes = DTYPE_BYTES[grad_dtype or dtype]
    l_bytes = DTYPE_BYTES[lora_dtype or dtype]
    counts = count_params(arch)
    n_lora = lora_params(arch, lora_r, targets) if method != "full" else 0
    n_params = counts["total"] + n_lora
    trainable = counts["total"] if method == "full" else n_lora
    train_bytes = w if method == "full" else l_bytes  # dtype of the trainable parameters

    if method == "qlora":
        shapes = linear_shapes(arch)
        params = arch["num_hidden_layers"] * sum(_qlora_linear_bytes(o, i, quant_blocksize, double_quant)
                                                 for i, o in shapes.values())
        params += (counts["total"] - counts["linear"]) * w + n_lora * l_bytes
    else:
        params = counts["total"] * w + n_lora * l_bytes
    grads = trainable * g_bytes
    n_states, state_bytes = OPTIMIZERS[optimizer]
    state_bytes = state_bytes or (4 if master_weights else DTYPE_BYTES[state_dtype] if state_dtype else train_bytes)
    opt = trainable * n_states * state_bytes + (4 * trainable if master_weights and train_bytes != 4 else 0)
    if optimizer == "adamw_8bit":
        opt += n_states * 4 * math.ceil(trainable / 256)  # blockwise fp32 absmax per 256 values

    act = activation_bytes(arch, batch_size=batch_size, seq_len=seq_len, act_bytes=w,
                           trainable={"base": method == "full", "lora": targets if method != "full" else ()},
                           lora_r=lora_r if method != "full" else 0, flash_attention=flash_attention,
                           grad_checkpointing=grad_checkpointing)
    N, V = batch_size * seq_len, arch["vocab_size"]
    # Transients at the start of backward: logits returned to the caller (dtype), their fp32 copy's gradient
    # and the log-softmax gradient (2 x fp32). In the optimizer step, torch's foreach AdamW allocates about
    # one temporary per state tensor.
    logits_transient = N * V * (w + 8)
    step_transient = trainable * state_bytes if optimizer.startswith("adamw") else 0
    if zero_stage >= 1:
        opt = math.ceil(opt / n_gpus)
    if zero_stage >= 2:
        grads = math.ceil(grads / n_gpus)
    if zero_stage >= 3:
        params = math.ceil(params / n_gpus)
    backward_peak = params + opt + max(act["total"] + max(logits_transient, act["recompute"]), grads + act["head"])
    step_peak = params + grads + opt + step_transient
    peak = max(backward_peak, step_peak)
    assumptions = dict(method=method, dtype=dtype, grad_dtype=grad_dtype or dtype, lora_dtype=lora_dtype or dtype,
                       optimizer=optimizer, optimizer_state_bytes=state_bytes, master_weights=master_weights,
                       batch_size=batch_size, seq_len=seq_len, lora_r=lora_r if method != "full" else None,
                       lora_targets=targets if method != "full" else None, grad_checkpointing=grad_checkpointing,
                       flash_attention=flash_attention, double_quant=double_quant if method == "qlora" else None,
                       quant_blocksize=quant_blocksize if method == "qlora" else None, zero_stage=zero_stage,
                       n_gpus=n_gpus, logits="fp32 log-softmax over the full vocabulary for every token",
                       overhead="max(logit-gradient transient at the start of backward, one-layer recompute with "
                                "checkpointing, optimizer-step temporaries)")
    overhead = max(logits_transient, act["recompute"], step_transient)
    return MemoryBreakdown(params=params, grads=grads, optimizer=opt, activations=act["total"], n_params=n_params,
                           trainable_params=trainable, overhead=overhead, peak=peak, assumptions=assumptions)


def fits(breakdown: MemoryBreakdown, gpus: dict | None = None, use: str = "peak") -> dict[str, bool]:
    """{gpu name: does `breakdown.peak` (or `.total`) fit in its memory?} for T4, 4090, A100 40/80, H100."""
    if not isinstance(breakdown, MemoryBreakdown):
        raise TypeError(f"breakdown must be a MemoryBreakdown, got {type(breakdown).__name__}")
    check_choice("use", use, ("peak", "total"))
    need = breakdown.peak if use == "peak" and breakdown.peak is not None else breakdown.total
    return {name: need <= gb * 1e9 for name, gb in (gpus or GPUS_GB).items()}


# ---- measurement ------------------------------------------------------------------------------------


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _quant_state_tensors(p) -> list[torch.Tensor]:
    qs = getattr(p, "quant_state", None)
    if qs is None:
        return []
    out = [t for t in (qs.absmax, qs.code, getattr(qs, "offset", None)) if isinstance(t, torch.Tensor)]
    if getattr(qs, "state2", None) is not None:
        out += [t for t in (qs.state2.absmax, qs.state2.code) if isinstance(t, torch.Tensor)]
    return out


def param_storage_bytes(model: nn.Module) -> tuple[int, set]:
    """(bytes, storage keys) of the parameters, buffers excluded, 4-bit quantization constants included."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        for t in [p, *_quant_state_tensors(p)]:
            seen.setdefault(_storage_key(t), t.untyped_storage().nbytes())
    return sum(seen.values()), set(seen)


def _make_optimizer(name: str, params, lr: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "sgd_no_momentum":
        return torch.optim.SGD(params, lr=lr)
    if name == "adamw_8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, lr=lr)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def measure_training_memory(model: nn.Module, batch, *, optimizer: str = "adamw", lr: float = 1e-4,
                            grad_checkpointing: bool = False) -> MemoryBreakdown:
    """Run one training step of `model` on `batch` and account for its memory on the model's device.

    batch: a dict with input_ids (labels default to input_ids) or a LongTensor of input ids (B, T).
    Exact accounting on any device: parameter storages, .grad tensors, optimizer state tensors, and every
    tensor autograd saves for backward (torch.autograd.graph.saved_tensors_hooks; parameters excluded,
    shared storages counted once). On CUDA, `peak` is torch.cuda.max_memory_allocated over a second step
    (optimizer states already allocated) minus nothing: the real allocator peak.
    With grad_checkpointing, transformers keeps each layer's input outside autograd; those are added, but
    the one-layer recompute in backward is not seen by the hooks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch, torch.Tensor):
        batch = {"input_ids": batch}
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise TypeError("batch must be a LongTensor of input ids or a dict with 'input_ids'")
    check_choice("optimizer", optimizer, list(OPTIMIZERS))
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) for k, v in batch.items()}
    batch.setdefault("labels", batch["input_ids"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters (requires_grad=False everywhere)")
    if grad_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()
    params, param_keys = param_storage_bytes(model)
    opt = _make_optimizer(optimizer, trainable, lr)
    cuda = dev.type == "cuda"

    def step(record: bool):
        saved: dict[int, int] = {}

        def pack(t):
            key = _storage_key(t)
            if record and key not in param_keys and key not in saved:
                saved[key] = t.untyped_storage().nbytes()
            return t

        layer_inputs: dict[int, int] = {}
        hooks = []
        if grad_checkpointing and record:
            for m in model.modules():
                if type(m).__name__.endswith("DecoderLayer"):
                    def pre(mod, args, kwargs):
                        x = args[0] if args else kwargs["hidden_states"]
                        layer_inputs[_storage_key(x)] = x.untyped_storage().nbytes()
                    hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(**batch)
        for hk in hooks:
            hk.remove()
        out.loss.backward()
        grads = sum(p.grad.untyped_storage().nbytes() for p in trainable if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=True)
        acts = sum(saved.values()) + sum(v for k, v in layer_inputs.items() if k not in saved)
        return acts, grads

    acts, grads = step(record=True)
    states = {}
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                states.setdefault(_storage_key(v), v.untyped_storage().nbytes())
    peak = None
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step(record=False)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    n_total = sum(math.prod(p.quant_state.shape) if getattr(p, "quant_state", None) is not None else p.numel()
                  for p in model.parameters())
    if grad_checkpointing:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    return MemoryBreakdown(params=params, grads=grads, optimizer=sum(states.values()), activations=acts,
                           n_params=n_total, trainable_params=sum(p.numel() for p in trainable), peak=peak,
                           assumptions={"device": str(dev), "optimizer": optimizer, "measured": True,
                                        "batch_shape": tuple(batch["input_ids"].shape),
                                        "grad_checkpointing": grad_checkpointing})


def model_from_config(model_or_shape, *, dtype: torch.dtype = torch.float32, device="cpu", seed: int = 0,
                      **overrides) -> nn.Module:
    """A randomly initialised causal LM (transformers) with this architecture; no download.

    `overrides` change config fields (e.g. num_hidden_layers=2). device="meta" allocates nothing.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = architecture(model_or_shape)
    arch.update(overrides)
    model_type = arch.pop("model_type", "qwen3")
    arch.pop("qk_norm", None)
    cfg = AutoConfig.for_model(model_type, **{k: v for k, v in arch.items() if not k.startswith("_")})
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: plain (slower) initialisation
        from contextlib import nullcontext as no_init_weights

    with torch.device(device), no_init_weights():  # allocate only; the slow per-module init is skipped
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.tie_weights()  # no_init_weights also skips tying the lm_head to the embedding
    if torch.device(device).type != "meta":
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02, generator=gen)  # the usual initializer_range
    return model


# A ~100M-parameter Qwen3 shape for the CPU checks (mostly embedding: the real Qwen3 vocabulary).
QWEN3_100M = dict(model_type="qwen3", hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=64, intermediate_size=1536, vocab_size=151936,
                  tie_word_embeddings=True, max_position_embeddings=4096, rope_theta=1_000_000.0,
                  rms_norm_eps=1e-6, attention_bias=False, qk_norm=True)
