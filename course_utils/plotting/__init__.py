"""Pure plotting helpers: each returns (fig, ax) and never writes files.

One module per lecture: attention (01), norms (02), positional (03), moe (04), decoding (05), lora (06, with the
memory plots), sft (07), dpo (08), grpo (09), rlhf (10), quant (11), evaluation (12), beyond (13); figure.new_figure is the figure they all draw on.
"""

from .figure import live_figure, new_figure  # noqa: F401
from .attention import (LABELLED_TOKENS, plot_attention_weights, plot_masks, plot_scaling_study,  # noqa: F401
                        plot_entropy_grid, plot_attention_cost, plot_head_patterns, plot_dca_positions,
                        plot_sink_study, redraw_attention_weights, redraw_entropy_grid)
from .norms import plot_norm_axes, plot_grad_norms, plot_norm_loss_curves, plot_activations  # noqa: F401
from .positional import (plot_position_matrix, plot_rope_wavelengths, plot_t5_buckets,  # noqa: F401
                         plot_extrapolation, plot_position_loss, plot_rope_rotation, plot_score_bound,
                         plot_alibi_bias, plot_passkey_accuracy, plot_score_profile, redraw_rope_wavelengths,
                         redraw_score_bound)
from .moe import (plot_drop_vs_capacity, plot_expert_share, plot_loss_vs_flops, plot_router_tradeoff,  # noqa: F401
                  plot_routing_map)
from .decoding import (plot_next_token_filter, plot_repetition_table, plot_accuracy_vs_n,  # noqa: F401
                       plot_repetition_vs_likelihood, redraw_next_token_filter)
from .lora import plot_memory_breakdown, plot_peft_methods, plot_quant_error, plot_rank_scaling  # noqa: F401
from .sft import (plot_accuracy_curves, plot_attention_mask, plot_family_accuracy, plot_loss_curves,  # noqa: F401
                  plot_loss_history)
from .dpo import (plot_accuracy_during_training, plot_beta_sweep, plot_family, plot_preference_runs,  # noqa: F401
                  plot_token_logp_change)
from .grpo import (live_history, plot_grpo_history, plot_pass_at_k, plot_reward_curves, plot_runs,  # noqa: F401
                   plot_token_weights)
from .rlhf import plot_best_of_n, plot_calibration, plot_overoptimization, plot_rlhf_history  # noqa: F401
from .quant import (plot_channel_absmax, plot_distill, plot_error_vs_bits, plot_kl_fits,  # noqa: F401
                    plot_quant_table, plot_weight_grid, redraw_weight_grid)
from .evaluation import plot_contamination, plot_gain_distribution, plot_judges, plot_se_vs_n  # noqa: F401
from .beyond import plot_accuracies, plot_causal_trace, plot_choice_probs, plot_decode_memory  # noqa: F401
