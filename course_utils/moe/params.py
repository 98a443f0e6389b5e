"""Total vs active parameters of real MoE models, counted on the meta device from their public configs (no memory)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
