"""Mixture-of-Experts (混合专家): routing, the sparse MoE layer, balancing, active parameters, a tiny MoE LM.

Modules: routing (top-k, capacity, expert choice), layer (MoE with shared experts, Soft MoE), balance (aux losses,
z-loss, balance statistics), params (total vs active of real models), training (tiny MoE and dense LMs).
References: Shazeer et al. 2017 (arXiv:1701.06538); GShard (arXiv:2006.16668); Switch Transformer
(arXiv:2101.03961); ST-MoE (arXiv:2202.08906); Mixtral (arXiv:2401.04088); DeepSeekMoE (arXiv:2401.06066);
DeepSeek-V3 (arXiv:2412.19437).
"""

from .balance import (coefficient_of_variation, expert_share, importance_cv_loss, load_balancing_loss,  # noqa: F401
                      router_tradeoff, router_z_loss)
from .layer import MoE, SoftMoE, dense_reference_moe  # noqa: F401
from .params import MOE_MODELS, MoEParamCount, count_moe_params, deepseek_mtp_params  # noqa: F401
from .routing import (TopKRouter, biased_top_k_routing, capacity_keep_mask, drop_fraction,  # noqa: F401
                      expert_capacity, expert_choice_routing, experts_per_token, top_k_routing, update_expert_bias)
from .training import (TOKEN_CLASSES, active_params, corpus_rows, dense_language_model, expert_shares,  # noqa: F401
                       moe_language_model, moe_layers, routing_by_token_class, routing_map, token_class, train_moe_lm)
