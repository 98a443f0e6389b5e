"""LoRA (low-rank adaptation) and NF4 (4-bit NormalFloat) quantization from scratch.

LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685).
rsLoRA scaling: Kalajdzievski 2023 (arXiv:2312.03732). NF4 + double quantization: Dettmers et al. 2023,
"QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_choice, check_int, check_number, check_tensor

# ---- LoRA -----------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """h = W0 x + (alpha / r) * B A x, with W0 frozen, A (r, in) random and B (out, r) zero.

    x (..., in_features) -> (..., out_features). `base` is an nn.Linear (or a bitsandbytes Linear4bit).
    Parameter names follow peft: `base_layer`, `lora_A`, `lora_B`.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, *,
                 use_rslora: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        in_features, out_features = _linear_shape(base, "base")
        check_int("r", r)
        check_number("alpha", alpha, 0, low_open=True, finite=True, allowed="a positive number")
        check_number("dropout", dropout, 0, 1, high_open=True)
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.use_rslora = r, float(alpha), use_rslora
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r  # rsLoRA keeps updates stable at high r
        weight = getattr(base, "weight")
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32  # 4-bit base -> float32 adapters
        self.lora_A = nn.Linear(in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=weight.device, dtype=dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        with torch.no_grad():  # A as in peft (kaiming-uniform, a=sqrt(5)); B = 0 so that delta W = 0 at the start
            bound = 1.0 / math.sqrt(in_features)
            a = torch.empty(r, in_features, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            self.lora_A.weight.copy_(a)
            self.lora_B.weight.zero_()
        self.in_features, self.out_features = in_features, out_features

    def delta_weight(self) -> torch.Tensor:
        """(alpha/r) * B @ A, shape (out_features, in_features)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        lora = self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype))))
        return out + (lora * self.scaling).to(out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}"


def _linear_shape(module: nn.Module, name: str) -> tuple[int, int]:
    if not isinstance(module, nn.Module) or not hasattr(module, "in_features") or not hasattr(module, "weight"):
        raise TypeError(f"{name} must be an nn.Linear (or bitsandbytes Linear4bit), got {type(module).__name__}")
    return int(module.in_features), int(module.out_features)


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    try:
        import bitsandbytes as bnb
        return isinstance(module, bnb.nn.Linear4bit)
    except ImportError:  # bitsandbytes is optional for plain LoRA
        return False


def find_linear_names(model: nn.Module, exclude=("lm_head",)) -> list[str]:
    """Short names of the linear layers in `model` (e.g. ['q_proj', ..., 'down_proj']), lm_head excluded."""
    names = {name.split(".")[-1] for name, m in model.named_modules() if _is_linear(m) and name}
    return sorted(n for n in names if n not in exclude)


def add_lora(model: nn.Module, target_modules, r: int, alpha: float, dropout: float = 0.0, *,
             use_rslora: bool = False, seed: int = 0) -> nn.Module:
    """Wrap every linear whose name ends with one of `target_modules` in a LoRALinear; freeze the rest.

    target_modules: list of short names ("q_proj", "v_proj", ...) or "all-linear" (every linear but lm_head).
    Works in place and returns `model`. A seed makes the A matrices reproducible.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_int("r", r)
    available = find_linear_names(model)
    if target_modules == "all-linear":
        targets = available
    elif isinstance(target_modules, (list, tuple, set)) and target_modules and \
            all(isinstance(t, str) for t in target_modules):
        targets = list(target_modules)
        unknown = [t for t in targets if t not in available]
        if unknown:
            raise ValueError(f"target_modules has unknown module names {unknown}; this model's linear layers "
                             f"are {available} (or pass 'all-linear')")
    else:
        raise ValueError(f"target_modules must be 'all-linear' or a non-empty list of module names, got {target_modules!r}")
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and _is_linear(child) and not isinstance(module, LoRALinear):
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout, use_rslora=use_rslora, generator=gen))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by one nn.Linear with W = W0 + (alpha/r) B A: same outputs, no extra latency.

    Works in place and returns `model` (a bare LoRALinear is returned merged as an nn.Linear).
    """
    if isinstance(model, LoRALinear):
        return _merged_linear(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, _merged_linear(child))
    return model


def _merged_linear(layer: LoRALinear) -> nn.Linear:
    base = layer.base_layer
    with torch.no_grad():
        if isinstance(base, nn.Linear):
            w0, dtype = base.weight, base.weight.dtype
        else:  # 4-bit base: merging gives a dense float weight (the usual "merge into a 16-bit copy")
            import bitsandbytes.functional as bnbF
            w0 = bnbF.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
            dtype = layer.lora_A.weight.dtype
        merged = nn.Linear(layer.in_features, layer.out_features, bias=base.bias is not None,
                           device=w0.device, dtype=dtype)
        merged.weight.copy_((w0.float() + layer.delta_weight().float()).to(dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting a 4-bit packed weight as its real element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None:  # Params4bit: two 4-bit values per stored byte
            n = math.prod(p.quant_state.shape)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def lora_param_count(d_in: int, d_out: int, r: int) -> int:
    """Trainable parameters LoRA adds to one d_out x d_in matrix: r * (d_in + d_out)."""
    for name, v in (("d_in", d_in), ("d_out", d_out)):
        check_int(name, v)
    check_int("r", r)
    return r * (d_in + d_out)


# ---- NF4 ------------------------------------------------------------------------------------------


def nf4_codebook(offset: float = 0.9677083) -> torch.Tensor:
    """The 16 NF4 values in [-1, 1]: normal quantiles, 8 positive + 7 negative + an exact zero. (16,) float32.

    Positive half: ppf of 9 evenly spaced probabilities from `offset` down to 0.5 (0.5 dropped);
    negative half: the same with 8 points, so zero is represented exactly (QLoRA, appendix E).
    """
    check_number("offset", offset, 0.5, 1, low_open=True, high_open=True)
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # 8 values > 0
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # 7 values < 0
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.abs().max()).float()


# FP4 (E2M1) as bitsandbytes defines it, normalized so the largest magnitude is 1.
_FP4_MAGNITUDES = (0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def fp4_codebook() -> torch.Tensor:
    """The 15 distinct FP4 (E2M1) values bitsandbytes uses, scaled to [-1, 1]. Sorted, float32."""
    mags = torch.tensor(_FP4_MAGNITUDES, dtype=torch.float64) / 12.0
    return torch.cat([-mags[1:].flip(0), mags]).float()


def int4_codebook() -> torch.Tensor:
    """Symmetric absmax int4: the 15 levels k/7 for k = -7..7. Sorted, float32."""
    return (torch.arange(-7, 8, dtype=torch.float64) / 7).float()


def _check_blocks(w: torch.Tensor, blocksize: int, name: str = "w") -> None:
    check_tensor(name, w, floating=True)
    check_int("blocksize", blocksize)
    if w.numel() == 0 or not torch.isfinite(w).all():
        raise ValueError(f"{name} must be non-empty and finite (no NaN/inf), got shape {tuple(w.shape)}")
    if w.numel() % blocksize:
        raise ValueError(f"w.numel() must be a multiple of blocksize={blocksize}, got {w.numel()} (shape {tuple(w.shape)})")


def quantize_blockwise(w: torch.Tensor, codebook: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantization to the nearest codebook value -> (codes uint8 (N,), absmax float32 (N/blocksize,))."""
    _check_blocks(w, blocksize)
    blocks = w.detach().reshape(-1, blocksize).float()  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1).reshape(-1)  # (N,)
    book = codebook.to(scaled.device).float()
    order = torch.argsort(book)
    midpoints = (book[order[:-1]] + book[order[1:]]) / 2  # nearest value = which midpoint interval
    codes = order[torch.bucketize(scaled, midpoints)]
    return codes.to(torch.uint8), absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, shape, codebook: torch.Tensor,
                         blocksize: int = 64) -> torch.Tensor:
    """codebook[codes] * absmax of each block, reshaped to `shape`. float32."""
    values = codebook.to(codes.device)[codes.long()].reshape(-1, blocksize)  # (n_blocks, blocksize)
    return (values * absmax.reshape(-1, 1)).reshape(shape)


def quantize_nf4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4: blockwise absmax + nearest of the 16 NF4 values -> (codes uint8 (N,) in 0..15, absmax float32 (N/blocksize,))."""
    return quantize_blockwise(w, nf4_codebook(), blocksize)


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64) -> torch.Tensor:
    """Inverse of quantize_nf4 (up to rounding): nf4_codebook()[codes] * absmax, reshaped to `shape`."""
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        raise TypeError(f"codes must be a uint8 tensor from quantize_nf4, got {getattr(codes, 'dtype', type(codes))}")
    if codes.numel() != absmax.numel() * blocksize or codes.numel() != math.prod(shape):
        raise ValueError(f"shape {tuple(shape)} and absmax ({absmax.numel()} blocks of {blocksize}) do not match "
                         f"{codes.numel()} codes")
    return dequantize_blockwise(codes, absmax, shape, nf4_codebook(), blocksize)


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, first code in the high nibble (bitsandbytes' layout). (N,) -> (N/2,)."""
    c = codes.reshape(-1).to(torch.uint8)
    if c.numel() % 2:
        raise ValueError(f"codes must have an even number of elements, got {c.numel()}")
    return (c[0::2] << 4) | c[1::2]


def unpack_4bit(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_4bit. (N/2,) uint8 -> (N,) uint8."""
    p = packed.reshape(-1).to(torch.uint8)
    return torch.stack([p >> 4, p & 0xF], dim=1).reshape(-1)  # (N/2, 2) -> (N,)


def double_quantize(absmax: torch.Tensor, blocksize: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize the absmax constants themselves: subtract the mean, int8 absmax per block of 256.

    Returns (codes int8 (n,), scales float32 (n/blocksize,), offset float32 ()). `dequantize_double` inverts it.
    """
    _check_blocks(absmax, blocksize, "absmax")
    offset = absmax.float().mean()
    centered = (absmax.float() - offset).reshape(-1, blocksize)  # (n_blocks2, blocksize)
    scales = centered.abs().amax(dim=1).clamp(min=1e-38)  # (n_blocks2,)
    codes = torch.round(centered / scales.unsqueeze(1) * 127).to(torch.int8).reshape(-1)
    return codes, scales, offset


def dequantize_double(codes: torch.Tensor, scales: torch.Tensor, offset: torch.Tensor, blocksize: int = 256) -> torch.Tensor:
    """Inverse of double_quantize: float32 absmax (n,)."""
    return (codes.float().reshape(-1, blocksize) / 127 * scales.unsqueeze(1)).reshape(-1) + offset


def bits_per_parameter(blocksize: int = 64, double_quant: bool = True, blocksize2: int = 256,
                       code_bits: int = 4) -> float:
    """Storage bits per weight: code bits + quantization constants. NF4/64: 4.5 plain, 4.127 with double quant."""
    check_int("blocksize", blocksize)
    check_int("blocksize2", blocksize2)
    if double_quant:  # 8-bit absmax per block + one fp32 scale per blocksize2 absmax values
        return code_bits + 8 / blocksize + 32 / (blocksize * blocksize2)
    return code_bits + 32 / blocksize


QUANTIZERS = {  # name -> codebook; every variant is quantize_blockwise with its codebook
    "nf4": nf4_codebook,
    "fp4": fp4_codebook,
    "int4": int4_codebook,
}


def quantization_error(w: torch.Tensor, kind: str = "nf4", blocksize: int = 64) -> dict:
    """Round-trip error of a 4-bit format on `w`: {'rmse', 'relative_rmse', 'max_abs'}."""
    check_choice("kind", kind, list(QUANTIZERS))
    book = QUANTIZERS[kind]()
    codes, absmax = quantize_blockwise(w, book, blocksize)
    err = dequantize_blockwise(codes, absmax, w.shape, book, blocksize) - w.detach().float()
    rmse = err.pow(2).mean().sqrt().item()
    return {"rmse": rmse, "relative_rmse": rmse / w.detach().float().pow(2).mean().sqrt().item(),
            "max_abs": err.abs().max().item()}


# ---- is bitsandbytes usable? ----------------------------------------------------------------------


def bitsandbytes_status() -> tuple[bool, str]:
    """(can bitsandbytes quantize here, one line saying which version or why not and what runs instead).

    Notebook cells that compare with bitsandbytes call this first and print the reason when they skip.
    """
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional  # noqa: F401  (the NF4 kernels the lessons compare with)
    except Exception as exc:  # ImportError, or a broken install failing while it loads
        return False, (f"bitsandbytes is not importable ({type(exc).__name__}: {exc}); the pure-PyTorch NF4 path in "
                       "course_utils.lora is used instead. Fix: `make setup` installs bitsandbytes.")
    return True, f"bitsandbytes {bnb.__version__}"


# ---- bitsandbytes CPU trap ------------------------------------------------------------------------


def disable_cpu_weight_repacking(model: nn.Module) -> int:
    """Set `support_avx512bf16_for_cpu = False` on every bitsandbytes Linear4bit; returns how many.

    On AVX512-BF16 CPUs, bitsandbytes repacks 4-bit weights in place the first time an eval/no-grad
    forward runs, and LoRA gradients through the repacked layer are silently wrong afterwards
    (DESIGN.md section 6). Call this right after loading a 4-bit model, before any inference.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    import bitsandbytes as bnb

    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_qlora_model(name: str = "course-tiny", *, r: int = 8, alpha: float = 16, target_modules="all-linear",
                     double_quant: bool = True, compute_dtype: torch.dtype = torch.float32, seed: int = 0):
    """course-tiny (or a local model) in NF4 via BitsAndBytesConfig, with peft LoRA adapters, on CPU.

    Returns (peft_model, tokenizer); the CPU repacking trap is already disabled. Without a usable bitsandbytes
    it says so and falls back to `fake_quantize_nf4` (the same NF4-rounded weights in plain PyTorch).
    """
    from peft import LoraConfig, get_peft_model

    from .models import _resolve, load_model

    check_int("r", r)
    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    except ImportError as exc:
        print(f"bitsandbytes is not importable ({exc}); QLoRA falls back to the pure-PyTorch NF4 path: "
              "base weights rounded to NF4 by course_utils.lora.quantize_nf4 (same values, stored as float32, "
              "no memory saving, no double quantization). Fix: `make setup` installs bitsandbytes.")
        model, tokenizer = load_model(name, device="cpu")
        fake_quantize_nf4(model)
        torch.manual_seed(seed)
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                            task_type="CAUSAL_LM")
        return get_peft_model(model, config), tokenizer
    _, tokenizer = load_model(name, device="cpu")
    source, _ = _resolve(name)
    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=bnb_config, dtype=torch.float32,
                                                 device_map="cpu")
    disable_cpu_weight_repacking(model)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config), tokenizer




def fake_quantize_nf4(model: nn.Module, *, blocksize: int = 64, skip=("lm_head",)) -> int:
    """Round the weight of every nn.Linear (but `skip`) to NF4 in place, frozen: QLoRA's forward without bitsandbytes.

    Returns how many layers were rounded. Tied weights are left alone (they are embeddings too).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    n = 0
    for mod_name, module in model.named_modules():
        if type(module) is nn.Linear and mod_name.rsplit(".", 1)[-1] not in skip and module.weight.numel() % blocksize == 0:
            w = module.weight.data
            codes, absmax = quantize_nf4(w.float(), blocksize)
            module.weight.data = dequantize_nf4(codes, absmax, w.shape, blocksize).to(w.dtype)  # (out, in)
            module.weight.requires_grad_(False)
            n += 1
    return n


def quantize_model_nf4(model: nn.Module, *, double_quant: bool = True, compute_dtype: torch.dtype = torch.float32,
                       skip=("lm_head",)) -> nn.Module:
    """Swap every nn.Linear (but `skip`) for a bitsandbytes NF4 Linear4bit holding the same weights, in place.

    What `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")` does at load time, for a model
    already in memory (e.g. one built from a config). The CPU repacking trap is disabled on the new layers.
    """
    import bitsandbytes as bnb

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and name not in skip:
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=double_quant,
                                      quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data.float().contiguous(), requires_grad=False,
                                             compress_statistics=double_quant, quant_type="nf4", module=q)
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data.clone(), requires_grad=False)
                q = q.to(child.weight.device)  # quantizes the weight
                q.support_avx512bf16_for_cpu = False
                setattr(module, name, q)
    return model


# ---- a small fine-tuning loop for the rank sweep --------------------------------------------------


def task_texts(n: int, *, seed: int = 0, families=None, split: str = "train") -> list[str]:
    """`n` texts in a format course-tiny never saw in pretraining: 'Task: <prompt> / Answer: <<answer>>'."""
    from .data import make_tasks

    return [f"Task: {t.prompt}\nAnswer: <<{t.answer}>>" for t in make_tasks(n, split, seed=seed, families=families)]


def lora_plus_groups(model: nn.Module, lr: float, lr_ratio_B: float) -> list[dict]:
    """AdamW parameter groups for LoRA+ (Hayou et al. 2024, arXiv:2402.12354): every trainable `lora_B` weight
    at lr * lr_ratio_B, everything else trainable at lr. lr_ratio_B = 1 is plain LoRA."""
    check_number("lr_ratio_B", lr_ratio_B, 0, low_open=True, finite=True, allowed="a positive number")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters")
    b = [p for n, p in trainable if "lora_B" in n]
    rest = [p for n, p in trainable if "lora_B" not in n]
    return [g for g in ({"params": rest, "lr": lr}, {"params": b, "lr": lr * lr_ratio_B}) if g["params"]]


def finetune(model: nn.Module, tokenizer, texts: list[str], *, steps: int, batch_size: int = 8, lr: float = 1e-3,
             seed: int = 0, max_len: int = 64, lr_ratio_B: float = 1.0) -> list[float]:
    """Train the trainable parameters of `model` with AdamW on next-token loss over `texts`; returns losses.

    lr_ratio_B: LoRA+ -- the lora_B weights train at lr * lr_ratio_B (1 = plain LoRA)."""
    check_int("steps", steps)
    if not texts:
        raise ValueError("texts must be a non-empty list of strings")
    opt = torch.optim.AdamW(lora_plus_groups(model, lr, lr_ratio_B), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token or ""
    pad = tokenizer.pad_token_id
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch_size,), generator=gen).tolist()
        enc = tokenizer([texts[i] + eos for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_len)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        if pad is None:
            labels = enc["input_ids"]
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    return losses


@torch.no_grad()
def eval_loss(model: nn.Module, tokenizer, texts: list[str], max_len: int = 64) -> float:
    """Mean next-token loss of `model` over `texts` (one batch)."""
    was_training = model.training
    model.eval()
    enc = tokenizer([t + (tokenizer.eos_token or "") for t in texts], return_tensors="pt", padding=True,
                    truncation=True, max_length=max_len)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss.item()
    model.train(was_training)
    return loss


@torch.no_grad()
def answer_correct(model: nn.Module, tokenizer, texts: list[str]) -> list[bool]:
    """For each 'Task: ... Answer: <<answer>>' text: is every token of `answer>>` and the end token the model's
    top choice given the text before it? That is exactly "greedy decoding after `<<` writes this answer"."""
    was_training = model.training
    model.eval()
    correct = []
    for text in texts:
        if text.count("<<") != 1:
            raise ValueError(f"texts must contain '<<' exactly once (as task_texts writes them), got {text!r}")
        prompt = tokenizer(text.split("<<")[0] + "<<")["input_ids"]
        ids = tokenizer(text + (tokenizer.eos_token or ""))["input_ids"]
        n_prompt = len(prompt)
        if ids[:n_prompt] != prompt:
            raise ValueError(f"the tokenizer splits {text!r} differently around '<<'; cannot locate the answer")
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        correct.append(bool((logits[n_prompt - 1:-1].argmax(-1) == torch.tensor(ids[n_prompt:])).all()))
    model.train(was_training)
    return correct
