"""PEFT families beyond LoRA, from scratch: bottleneck adapters, (IA)^3, prompt tuning and prefix tuning.

Each one adds a few trainable parameters to a frozen transformers causal LM and keeps its call signature
(`model(input_ids=..., attention_mask=..., labels=...)` -> `.loss`, `.logits`), so the same training loop and
evaluation run on all of them. tests/test_peft_methods.py checks (IA)^3, prompt tuning and prefix tuning against
peft with the same parameter values, and the adapter against a float64 hand computation (peft has no
bottleneck adapter).

Adapters: Houlsby et al. 2019 (arXiv:1902.00751). (IA)^3: Liu et al. 2022 (arXiv:2205.05638).
Prompt tuning: Lester et al. 2021 (arXiv:2104.08691). Prefix tuning: Li & Liang 2021 (arXiv:2101.00190).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .checks import check_int
from .lora import add_lora


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _wrap_linears(model: nn.Module, names, wrap) -> None:
    """Replace every child linear called one of `names` by `wrap(name, linear)`; at least one must exist."""
    found = False
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if child_name in names and isinstance(child, nn.Linear):
                setattr(module, child_name, wrap(child_name, child))
                found = True
    if not found:
        raise ValueError(f"no linear layer named one of {list(names)} in {type(model).__name__}")


# ---- bottleneck adapters (Houlsby et al. 2019) ------------------------------------------------------


class BottleneckAdapter(nn.Module):
    """h -> h + W_up σ(W_down h): down to `bottleneck` dims first, then back up. (..., d) -> (..., d).

    W_up starts at zero, so the adapter is the identity at the start (Houlsby et al. initialise it near zero).
    """

    def __init__(self, d: int, bottleneck: int):
        super().__init__()
        check_int("bottleneck", bottleneck)
        self.down = nn.Linear(d, bottleneck)
        self.up = nn.Linear(bottleneck, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(nn.functional.gelu(self.down(h)))


class LinearThenAdapter(nn.Module):
    """A frozen linear followed by a BottleneckAdapter on its output: (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, bottleneck: int):
        super().__init__()
        self.base_layer = base
        self.adapter = BottleneckAdapter(base.out_features, bottleneck).to(base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(x))


def add_adapters(model: nn.Module, bottleneck: int, targets=("o_proj", "down_proj")) -> nn.Module:
    """Freeze `model` and put a bottleneck adapter after each attention output and MLP output (Houlsby's two
    places per layer, before the residual add). In place; returns `model`."""
    _freeze(model)
    _wrap_linears(model, targets, lambda name, lin: LinearThenAdapter(lin, bottleneck))
    return model


# ---- (IA)^3 (Liu et al. 2022) -----------------------------------------------------------------------


class IA3Linear(nn.Module):
    """A frozen linear with a learned vector l (ones at the start) that rescales it, as peft's IA3 does:
    on the output (keys, values) or, for a feed-forward layer, on the input. (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, feedforward: bool):
        super().__init__()
        self.base_layer, self.feedforward = base, feedforward
        size = base.in_features if feedforward else base.out_features
        self.ia3_l = nn.Parameter(torch.ones(size, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feedforward:
            return self.base_layer(x * self.ia3_l)
        return self.base_layer(x) * self.ia3_l


def add_ia3(model: nn.Module, targets=("k_proj", "v_proj", "down_proj"), feedforward=("down_proj",)) -> nn.Module:
    """Freeze `model` and rescale keys, values and the MLP's inner activations by learned vectors. In place."""
    unknown = [f for f in feedforward if f not in targets]
    if unknown:
        raise ValueError(f"feedforward must be a subset of targets {list(targets)}, got extra {unknown}")
    _freeze(model)
    _wrap_linears(model, targets, lambda name, lin: IA3Linear(lin, feedforward=name in feedforward))
    return model


# ---- prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021) -------------------------


def _ones_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, n_virtual: int) -> torch.Tensor:
    """(B, n_virtual + T) attention mask: the virtual tokens are always visible."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    ones = torch.ones(input_ids.shape[0], n_virtual, dtype=attention_mask.dtype, device=input_ids.device)
    return torch.cat([ones, attention_mask], dim=1)


class PromptTuning(nn.Module):
    """A frozen causal LM with `n_virtual` trainable input embeddings put before every input.

    forward(input_ids (B, T), attention_mask (B, T), labels (B, T)) -> the loss of predicting every real token
    (the first one from the prompt, as peft does) and the real tokens' logits (B, T, V). The soft prompt starts as the embeddings of random vocabulary tokens (Lester et al.).
    """

    def __init__(self, model: nn.Module, n_virtual: int, *, seed: int = 0):
        super().__init__()
        check_int("n_virtual", n_virtual)
        _freeze(model)
        self.model, self.n_virtual = model, n_virtual
        emb = model.get_input_embeddings().weight
        idx = torch.randint(emb.shape[0], (n_virtual,), generator=torch.Generator().manual_seed(seed))
        self.prompt = nn.Parameter(emb.detach()[idx].clone())

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        embeds = self.model.get_input_embeddings()(input_ids)
        prompt = self.prompt.unsqueeze(0).expand(input_ids.shape[0], -1, -1).to(embeds.dtype)
        out = self.model(inputs_embeds=torch.cat([prompt, embeds], dim=1),
                         attention_mask=_ones_mask(input_ids, attention_mask, self.n_virtual), **kwargs)
        loss = None
        if labels is not None:  # each position predicts the next token; the last virtual one predicts labels[:, 0]
            pred = out.logits[:, self.n_virtual - 1:-1]
            loss = nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), labels.reshape(-1),
                                               ignore_index=-100)
        logits = out.logits[:, self.n_virtual:]
        return CausalLMOutputWithPast(loss=loss, logits=logits)


class PrefixTuning(nn.Module):
    """A frozen causal LM whose every attention layer sees `n_virtual` extra trainable keys and values.

    prefix: (n_virtual, layers, 2, kv_heads, head_dim), N(0, 1) at the start as in peft (without the
    reparametrization MLP of Li & Liang). The real tokens take positions n_virtual .. n_virtual + T - 1.
    forward as for PromptTuning: loss and logits (B, T, V) of the real tokens.
    """

    def __init__(self, model: nn.Module, n_virtual: int, *, seed: int = 0):
        super().__init__()
        check_int("n_virtual", n_virtual)
        _freeze(model)
        self.model, self.n_virtual = model, n_virtual
        c = model.config
        shape = (n_virtual, c.num_hidden_layers, 2, c.num_key_value_heads, c.head_dim)
        dtype = model.get_input_embeddings().weight.dtype
        self.prefix = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype))

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        batch = input_ids.shape[0]
        cache = DynamicCache(config=self.model.config)
        for layer in range(self.prefix.shape[1]):  # (n, kv_heads, head_dim) -> (B, kv_heads, n, head_dim)
            k, v = (self.prefix[:, layer, i].transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1) for i in (0, 1))
            cache.update(k, v, layer)
        return self.model(input_ids=input_ids, attention_mask=_ones_mask(input_ids, attention_mask, self.n_virtual),
                          past_key_values=cache, labels=labels, use_cache=False, **kwargs)


# ---- one entry point for comparisons ----------------------------------------------------------------

METHODS = ("LoRA", "adapter", "prefix", "prompt", "(IA)3")


def attach(model: nn.Module, method: str, size: int = 1, *, seed: int = 0) -> nn.Module:
    """Freeze `model` and add one PEFT method; returns the model to train (a wrapper for prefix / prompt).

    size: LoRA rank (all linear layers, alpha = 2r), adapter bottleneck width, number of virtual tokens for
    prefix and prompt tuning; (IA)^3 has no size (keys, values and MLP inner activations). LoRA+ is LoRA with
    another optimizer setting (lora.finetune's lr_ratio_B).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    check_int("size", size)
    if method == "LoRA":
        return add_lora(model, "all-linear", r=size, alpha=2 * size, seed=seed)
    if method == "adapter":
        torch.manual_seed(seed)  # the adapters' down projections use nn.Linear's default initialisation
        return add_adapters(model, size)
    if method == "prefix":
        return PrefixTuning(model, size, seed=seed)
    if method == "prompt":
        return PromptTuning(model, size, seed=seed)
    return add_ia3(model)
