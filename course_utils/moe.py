"""Mixture-of-Experts (混合专家): top-k router, sparse MoE layer, load-balancing loss, capacity, active parameters.

References: Shazeer et al. 2017 (sparsely-gated MoE, noisy top-k, importance CV loss, arXiv:1701.06538);
Lepikhin et al. 2020 (GShard, expert capacity, arXiv:2006.16668); Fedus et al. 2021 (Switch Transformer,
top-1 routing and the f·P load-balancing loss, arXiv:2101.03961); Jiang et al. 2024 (Mixtral, arXiv:2401.04088).
Names follow transformers' Mixtral / Qwen3-MoE code (`gate`, `experts`, `gate_proj/up_proj/down_proj`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_number
from .norms import SwiGLUMLP


# ---- experts and router ----------------------------------------------------------------------------

def top_k_routing(router_logits: torch.Tensor, top_k: int, norm_topk_prob: bool = True):
    """Softmax over experts, keep the top_k, optionally renormalize: logits (N, E) -> (weights (N, k), index (N, k)).

    The same as setting the other logits to -inf before the softmax ("KeepTopK") when norm_topk_prob=True.
    """
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        raise ValueError(f"router_logits must be a 2-D tensor (tokens, experts), got "
                         f"{getattr(router_logits, 'shape', type(router_logits).__name__)}")
    _check_experts(router_logits.shape[-1], top_k)
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.promote_types(router_logits.dtype, torch.float32))  # (N, E)
    weights, index = torch.topk(probs, top_k, dim=-1)  # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), index


class TopKRouter(nn.Module):
    """Linear gate + top-k: x (N, d_model) -> (router_logits (N, E), weights (N, k), index (N, k)).

    noise_std > 0 adds N(0, noise_std^2) to the logits in training mode (the noisy top-k of Shazeer et al.,
    with a fixed instead of a learned noise scale); the loss terms always see the clean logits.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, noise_std: float = 0.0, norm_topk_prob: bool = True):
        super().__init__()
        check_int("d_model", d_model)
        _check_experts(n_experts, top_k)
        check_number("noise_std", noise_std, 0)
        self.n_experts, self.top_k, self.noise_std, self.norm_topk_prob = n_experts, top_k, float(noise_std), norm_topk_prob
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))  # (E, d_model), as in transformers
        nn.init.normal_(self.weight, std=d_model ** -0.5)
        self.generator: torch.Generator | None = None  # set one for reproducible routing noise

    def forward(self, x: torch.Tensor):
        router_logits = F.linear(x, self.weight)  # (N, E)
        noisy = router_logits
        if self.training and self.noise_std > 0:
            noise = torch.randn(router_logits.shape, generator=self.generator, dtype=router_logits.dtype)
            noisy = router_logits + self.noise_std * noise.to(router_logits.device)
        weights, index = top_k_routing(noisy, self.top_k, self.norm_topk_prob)
        return router_logits, weights, index


# ---- capacity ---------------------------------------------------------------------------------------

def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert: ceil(capacity_factor * n_tokens * top_k / n_experts) (GShard / Switch)."""
    check_int("n_tokens", n_tokens, 0)
    _check_experts(n_experts, top_k)
    check_number("capacity_factor", capacity_factor, 0, low_open=True)
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def capacity_keep_mask(top_k_index: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Which (token, slot) assignments fit: index (N, k) -> keep (N, k) bool.

    Priority: all first choices before second choices, earlier tokens first (GShard). An assignment over
    capacity is dropped: that expert skips the token, and the residual connection carries it on.
    """
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError(f"top_k_index must be a 2-D tensor (tokens, top_k), got "
                         f"{getattr(top_k_index, 'shape', type(top_k_index).__name__)}")
    check_int("n_experts", n_experts)
    check_int("capacity", capacity, 0)
    n, k = top_k_index.shape
    flat = top_k_index.t().reshape(-1)  # (k*N,) slot-major: every token's first choice, then second...
    one_hot = F.one_hot(flat, n_experts)  # (k*N, E)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1  # (k*N,) place in its expert's queue
    return (position < capacity).view(k, n).t()  # (N, k)


# ---- the MoE layer ----------------------------------------------------------------------------------

class MoE(nn.Module):
    """Sparse MoE FFN: each token goes to its top_k experts, outputs mixed by the router weights.

    x (B, T, d_model) or (N, d_model) -> same shape. After a forward the module keeps
    `last_router_logits` (N, E), `last_top_k_index` (N, k) and `last_keep` (N, k) for losses and plots.
    capacity_factor=None: no capacity limit (Mixtral, Qwen-MoE inference). noise_std: see TopKRouter.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, capacity_factor: float | None = None,
                 noise_std: float = 0.0, norm_topk_prob: bool = True):
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        _check_experts(n_experts, top_k)
        if capacity_factor is not None:
            expert_capacity(1, n_experts, top_k, capacity_factor)  # validates capacity_factor
        self.d_model, self.n_experts, self.top_k, self.capacity_factor = d_model, n_experts, top_k, capacity_factor
        self.gate = TopKRouter(d_model, n_experts, top_k, noise_std, norm_topk_prob)
        self.experts = nn.ModuleList(SwiGLUMLP(d_model, d_ff) for _ in range(n_experts))
        self.last_router_logits = self.last_top_k_index = self.last_keep = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}) or (N, {self.d_model}), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        shape = x.shape
        h = x.reshape(-1, self.d_model)  # (N, d_model)
        router_logits, weights, index = self.gate(h)  # (N, E), (N, k), (N, k)
        keep = torch.ones_like(index, dtype=torch.bool)
        if self.capacity_factor is not None:
            cap = expert_capacity(h.shape[0], self.n_experts, self.top_k, self.capacity_factor)
            keep = capacity_keep_mask(index, self.n_experts, cap)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where((index == e) & keep)  # the tokens routed to expert e, and in which slot
            if token.numel() == 0:
                continue
            y = expert(h[token]) * weights[token, slot, None].to(h.dtype)  # (n_e, d_model)
            out.index_add_(0, token, y)
        self.last_router_logits, self.last_top_k_index, self.last_keep = router_logits, index, keep
        return out.view(shape)

    def expert_weights_3d(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Experts stacked as transformers stores them: gate_up_proj (E, 2*d_ff, d_model), down_proj (E, d_model, d_ff)."""
        gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight], 0) for e in self.experts])
        down = torch.stack([e.down_proj.weight for e in self.experts])
        return gate_up, down


def dense_reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The naive equivalent of MoE.forward (no capacity): run every expert on every token, zero the unchosen."""
    h = x.reshape(-1, moe.d_model)  # (N, d_model)
    _, weights, index = moe.gate(h)
    all_out = torch.stack([e(h) for e in moe.experts], dim=1)  # (N, E, d_model)
    mix = torch.zeros(h.shape[0], moe.n_experts, dtype=h.dtype).scatter_add_(1, index, weights.to(h.dtype))  # (N, E)
    return (mix.unsqueeze(-1) * all_out).sum(1).view(x.shape)


# ---- balancing losses and statistics ------------------------------------------------------------------

def _as_layers(router_logits) -> list[torch.Tensor]:
    layers = list(router_logits) if isinstance(router_logits, (tuple, list)) else [router_logits]
    if not layers or not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in layers):
        raise ValueError("router_logits must be a 2-D tensor (tokens, experts) or a tuple/list of them (one per layer)")
    if any(t.shape[0] == 0 for t in layers):
        raise ValueError(f"router_logits must hold at least one token, got shapes {[tuple(t.shape) for t in layers]}")
    return layers


def load_balancing_loss(router_logits, n_experts: int, top_k: int, attention_mask: torch.Tensor | None = None):
    """Switch-style aux loss E * sum_e f_e * P_e, the value transformers' Mixtral/Qwen-MoE `load_balancing_loss_func` gives.

    router_logits: (N, E) or a tuple of per-layer (N, E) tensors (pooled over layers).
    f_e = top-k assignments to expert e per token (sums to top_k); P_e = mean router probability of e.
    Perfect balance gives top_k; total collapse (the same experts for every token) gives n_experts.
    attention_mask (B, T) with B*T == N: padding tokens (0) are left out.
    """
    _check_experts(n_experts, top_k)
    layers = _as_layers(router_logits)
    if any(t.shape[-1] != n_experts for t in layers):
        raise ValueError(f"router_logits last dim must equal n_experts={n_experts}, got {[t.shape[-1] for t in layers]}")
    counts = torch.zeros(n_experts, dtype=torch.float32, device=layers[0].device)
    prob_sum = torch.zeros(n_experts, dtype=torch.float32, device=layers[0].device)
    rows = 0.0
    for logits in layers:
        w = torch.ones(logits.shape[0], device=logits.device)
        if attention_mask is not None:
            if attention_mask.numel() != logits.shape[0]:
                raise ValueError(f"attention_mask must have {logits.shape[0]} elements (one per token), "
                                 f"got {attention_mask.numel()}")
            w = attention_mask.reshape(-1).float().to(logits.device)  # (N,)
        probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
        index = probs.topk(top_k, dim=-1).indices  # (N, k)
        counts = counts + (F.one_hot(index, n_experts).float() * w[:, None, None]).sum((0, 1))  # (E,)
        prob_sum = prob_sum + (probs * w[:, None]).sum(0)  # (E,)
        rows = rows + w.sum()
    return n_experts * torch.sum((counts / rows) * (prob_sum / rows))


def importance_cv_loss(router_logits) -> torch.Tensor:
    """Shazeer et al.'s importance loss: CV(importance)^2, importance_e = sum over tokens of router prob of e."""
    layers = _as_layers(router_logits)
    importance = torch.softmax(torch.cat(layers).float(), dim=-1).sum(0)  # (E,)
    return importance.var(unbiased=False) / importance.mean() ** 2


def router_z_loss(router_logits) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2 (keeps router logits small)."""
    return torch.logsumexp(torch.cat(_as_layers(router_logits)).float(), dim=-1).pow(2).mean()


def expert_share(top_k_index: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction of (token, slot) assignments each expert received: index (N, k) -> (E,) summing to 1."""
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError("top_k_index must be a 2-D tensor (tokens, top_k)")
    check_int("n_experts", n_experts)
    counts = torch.bincount(top_k_index.reshape(-1), minlength=n_experts).float()
    return counts / counts.sum()


def coefficient_of_variation(x: torch.Tensor) -> float:
    """std / mean (population std) of a 1-D tensor; 0 means perfectly even."""
    return (x.float().std(unbiased=False) / x.float().mean()).item()


# ---- parameter counts of real MoE models (built on the meta device: no memory) -------------------------

# Public configs (from each model's config.json), as data.
MOE_MODELS: dict[str, dict] = {
    "mistralai/Mixtral-8x7B-v0.1": dict(
        model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, num_local_experts=8,
        num_experts_per_tok=2, tie_word_embeddings=False),
    "Qwen/Qwen3-30B-A3B": dict(
        model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
        num_experts=128, num_experts_per_tok=8, tie_word_embeddings=False, norm_topk_prob=True),
    # DeepSeek-V3 (arXiv:2412.19437): MLA attention, 1 shared + 256 routed experts (top-8), first 3 layers dense.
    # transformers does not build the multi-token-prediction (MTP) module (num_nextn_predict_layers): see
    # deepseek_mtp_params.
    "deepseek-ai/DeepSeek-V3": dict(
        model_type="deepseek_v3", hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128, vocab_size=129280,
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
        first_k_dense_replace=3, routed_scaling_factor=2.5, norm_topk_prob=True, tie_word_embeddings=False,
        num_nextn_predict_layers=1, max_position_embeddings=163840),
}


@dataclass
class MoEParamCount:
    """Parameter counts of an MoE model (numbers of parameters, not bytes)."""

    total: int  # everything that must be loaded
    active: int  # used per token: shared parts + top_k experts per MoE layer
    per_expert_per_layer: int  # one expert FFN in one layer
    n_moe_layers: int
    n_experts: int
    top_k: int
    input_embedding: int = 0  # the token-embedding table (a lookup: counted in `active`, but reads one row per token)


def _moe_config(name_or_config):
    from transformers import AutoConfig

    if isinstance(name_or_config, str):
        if name_or_config not in MOE_MODELS:
            raise ValueError(f"name_or_config must be one of {sorted(MOE_MODELS)} or a config dict, got {name_or_config!r}")
        cfg = dict(MOE_MODELS[name_or_config])
    elif isinstance(name_or_config, dict):
        cfg = dict(name_or_config)
    else:
        raise TypeError(f"name_or_config must be a str or dict, got {type(name_or_config).__name__}")
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def count_moe_params(name_or_config) -> MoEParamCount:
    """Total and active parameters of a known MoE model (MOE_MODELS key) or config dict, counted on the meta device.

    Active = total minus the (n_experts - top_k) routed experts a token skips in each MoE layer; shared experts
    (DeepSeek) and dense FFN layers (DeepSeek's first_k_dense_replace) are not routed, so they stay active.
    """
    from transformers import AutoModelForCausalLM

    config = _moe_config(name_or_config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    n_experts = getattr(config, "num_local_experts", None) or config.num_experts
    top_k = config.num_experts_per_tok
    expert_tensors = [(n, p) for n, p in model.named_parameters() if ".experts." in n]  # (E, ...) per layer
    n_moe_layers = len({n.split(".experts.")[0] for n, _ in expert_tensors})
    per_expert = sum(p.numel() for _, p in expert_tensors) // (n_experts * n_moe_layers)
    active = total - (n_experts - top_k) * per_expert * n_moe_layers
    embedding = model.get_input_embeddings().weight.numel()
    return MoEParamCount(total, active, per_expert, n_moe_layers, n_experts, top_k, embedding)


def deepseek_mtp_params(name_or_config="deepseek-ai/DeepSeek-V3") -> tuple[int, int]:
    """(unique, active) parameters of DeepSeek-V3's MTP modules, which transformers does not build.

    Each module: one MoE decoder layer + eh_proj (d x 2d) + enorm, hnorm, head norm; it shares the main model's
    embedding and output head (not counted here). Active: the layer minus its skipped routed experts.
    """
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer

    config = _moe_config(name_or_config)
    if config.model_type != "deepseek_v3":
        raise ValueError(f"name_or_config must describe a deepseek_v3 model, got model_type {config.model_type!r}")
    with torch.device("meta"):
        layer = DeepseekV3DecoderLayer(config, layer_idx=config.first_k_dense_replace)  # an MoE layer
    d = config.hidden_size
    per_module = sum(p.numel() for p in layer.parameters()) + 2 * d * d + 3 * d
    skipped = (config.n_routed_experts - config.num_experts_per_tok) * 3 * d * config.moe_intermediate_size
    n = config.num_nextn_predict_layers
    return n * per_module, n * (per_module - skipped)


# ---- DeepSeek-V3's auxiliary-loss-free balancing (arXiv:2412.19437, Sec. 2.1.2) --------------------------

def biased_top_k_routing(scores: torch.Tensor, bias: torch.Tensor, top_k: int, norm_topk_prob: bool = True):
    """Pick experts by scores + bias, weight them by the unbiased scores: scores (N, E), bias (E,) -> (N, k), (N, k).

    DeepSeek-V3 uses sigmoid scores; the bias only steers *which* experts are chosen, never the mixing weights.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D tensor (tokens, experts), got {getattr(scores, 'shape', scores)}")
    if not isinstance(bias, torch.Tensor) or bias.shape != scores.shape[-1:]:
        raise ValueError(f"bias must have shape ({scores.shape[-1]},), got {tuple(getattr(bias, 'shape', ()))}")
    _check_experts(scores.shape[-1], top_k)
    index = torch.topk(scores + bias, top_k, dim=-1).indices  # (N, k)
    weights = scores.gather(1, index)  # (N, k)
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, index


def update_expert_bias(bias: torch.Tensor, top_k_index: torch.Tensor, rate: float = 1e-3) -> torch.Tensor:
    """One balancing step: bias_e - rate * sign(load_e - mean load). bias (E,), index (N, k) -> new bias (E,)."""
    check_number("rate", rate, 0, low_open=True)
    if not isinstance(top_k_index, torch.Tensor) or top_k_index.dim() != 2:
        raise ValueError("top_k_index must be a 2-D tensor (tokens, top_k)")
    load = torch.bincount(top_k_index.reshape(-1), minlength=bias.shape[0]).to(bias.dtype)  # (E,)
    return bias - rate * torch.sign(load - load.mean())


# ---- a tiny MoE language model and its training loop ----------------------------------------------------

def moe_language_model(vocab_size: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_ff: int = 128,
                       n_experts: int = 8, top_k: int = 2, noise_std: float = 0.0, max_positions: int = 256,
                       seed: int = 0):
    """A small transformers Qwen3ForCausalLM whose every FFN is replaced by our MoE (same attention, norms, RoPE)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    check_int("vocab_size", vocab_size)
    check_int("n_layers", n_layers)
    check_int("n_heads", n_heads)
    if d_model % n_heads:
        raise ValueError(f"d_model must be divisible by n_heads={n_heads}, got {d_model}")
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                         num_attention_heads=n_heads, num_key_value_heads=n_heads, head_dim=d_model // n_heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):  # initialize from `seed` without touching the global RNG
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
        for layer in model.model.layers:
            layer.mlp = MoE(d_model, d_ff, n_experts, top_k, noise_std=noise_std)
    return model


def corpus_rows(tokenizer, n_documents: int, seq_len: int, *, seed: int = 0) -> torch.Tensor:
    """course_utils.data.pretraining_corpus(n_documents, seed) tokenized and packed into rows (N, seq_len)."""
    from .data import pretraining_corpus
    from .pretrain import pack

    check_int("n_documents", n_documents)
    check_int("seq_len", seq_len, 2)
    return pack(tokenizer, pretraining_corpus(n_documents, seed=seed), seq_len)


def moe_layers(model) -> list[MoE]:
    """The MoE modules of a model, in order."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def train_moe_lm(model, rows: torch.Tensor, *, steps: int, batch_size: int, lr: float = 3e-3,
                 aux_loss_coef: float = 0.01, seed: int = 0, log_every: int = 1) -> dict:
    """Next-token training on packed rows (N, T) with loss = CE + aux_loss_coef * load_balancing_loss.

    Returns {"step", "ce", "aux", "share"}: share is (n_logged, n_layers, E), each expert's fraction of assignments.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
        raise ValueError(f"rows must be a 2-D tensor of token ids (N, T), got {getattr(rows, 'shape', rows)}")
    check_number("aux_loss_coef", aux_loss_coef, 0)
    gen = torch.Generator().manual_seed(seed)
    layers = moe_layers(model)
    if not layers:
        raise ValueError("model has no MoE layers; build it with moe_language_model")
    for i, m in enumerate(layers):
        m.gate.generator = torch.Generator().manual_seed(seed + 1000 + i)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    log = {"step": [], "ce": [], "aux": [], "share": []}
    model.train()
    for step in range(steps):
        batch = rows[torch.randint(0, rows.shape[0], (batch_size,), generator=gen)].to(dev)  # (B, T)
        logits = model(input_ids=batch).logits  # (B, T, V)
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        aux = load_balancing_loss(tuple(m.last_router_logits for m in layers), layers[0].n_experts, layers[0].top_k)
        loss = ce + aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log["step"].append(step)
            log["ce"].append(ce.item())
            log["aux"].append(aux.item())
            log["share"].append(torch.stack([expert_share(m.last_top_k_index, m.n_experts) for m in layers]))
    model.eval()
    log["share"] = torch.stack(log["share"])  # (n_logged, n_layers, E)
    return log


@torch.no_grad()
def expert_shares(model, rows: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Each MoE layer's share of assignments per expert on rows (N, T): (n_layers, E), rows sum to 1."""
    layers = moe_layers(model)
    if not layers:
        raise ValueError("model has no MoE layers; build it with moe_language_model")
    model.eval()
    dev = next(model.parameters()).device
    counts = torch.zeros(len(layers), layers[0].n_experts)
    for i in range(0, rows.shape[0], batch_size):
        model(input_ids=rows[i: i + batch_size].to(dev))
        for j, m in enumerate(layers):
            counts[j] += torch.bincount(m.last_top_k_index.reshape(-1).cpu(), minlength=m.n_experts).float()
    return counts / counts.sum(-1, keepdim=True)


def drop_fraction(top_k_index: torch.Tensor, n_experts: int, capacity_factor: float) -> float:
    """Fraction of (token, slot) assignments dropped at this capacity factor. index (N, k) -> float."""
    n, k = top_k_index.shape
    cap = expert_capacity(n, n_experts, k, capacity_factor)
    return 1.0 - capacity_keep_mask(top_k_index, n_experts, cap).float().mean().item()


TOKEN_CLASSES = ("digit", "word start (space+letters)", "letters (inside a word)", "punctuation/other")


def token_class(token: str) -> str:
    """The surface class of a byte-level BPE token: digits with or without a leading space ('Ġ5') are "digit"."""
    text = token.replace("Ġ", " ").replace("Ċ", "\n")
    if text.strip().isdigit():
        return "digit"
    if text.startswith(" ") and text[1:].isalpha():
        return "word start (space+letters)"
    if text.isalpha():
        return "letters (inside a word)"
    return "punctuation/other"


@torch.no_grad()
def routing_by_token_class(model, tokenizer, rows: torch.Tensor, layer: int = 0) -> dict[str, torch.Tensor]:
    """Expert share of the first choice for each token class (digit, letters, space+letters, punctuation/other).

    rows (N, T) -> {class: (E,) shares}, measured on `layer`'s MoE.
    """
    layers = moe_layers(model)
    check_int("layer", layer, 0, len(layers) - 1)
    model.eval()
    model(input_ids=rows.to(next(model.parameters()).device))
    first = layers[layer].last_top_k_index[:, 0].cpu()  # (N*T,)
    classes = {name: [] for name in TOKEN_CLASSES}
    for pos, tok in enumerate(tokenizer.convert_ids_to_tokens(rows.reshape(-1).tolist())):
        classes[token_class(tok)].append(pos)
    n_experts = layers[layer].n_experts
    return {k: torch.bincount(first[v], minlength=n_experts).float() / max(len(v), 1) for k, v in classes.items() if v}


# ---- argument checks ------------------------------------------------------------------------------

def _check_experts(n_experts, top_k) -> None:
    check_int("n_experts", n_experts, allowed=">= 1")
    check_int("top_k", top_k, allowed=">= 1")
    if top_k > n_experts:
        raise ValueError(f"top_k must be <= n_experts ({n_experts}), got {top_k}")
