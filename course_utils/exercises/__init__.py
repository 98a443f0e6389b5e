"""Exercise checks: `check_*(your_function)` tests a student's function on fresh random inputs.

Each check prints one verdict line (PASS, TODO or FAIL) and returns nothing;
it never raises, so an unfilled stub does not stop the notebook. One module per lecture: setup (00),
attention (01), norms (02), positional (03), moe (04), decoding (05), lora (06), sft (07), dpo (08), grpo (09), rlhf (10), quant (11), evaluation (12), beyond (13).
"""

from .runner import call, compare, run_check  # noqa: F401
from .setup import check_softmax  # noqa: F401
from .attention import check_causal_attention, check_decode_step, check_induction_score, check_sharpest_head  # noqa: F401
from .norms import check_rms_norm, check_layer_norm, check_swiglu  # noqa: F401
from .positional import (check_apply_rope, check_alibi_slopes, check_ntk_inv_freq, check_yarn_ramp,  # noqa: F401
                         check_wavelength_stretch)
from .moe import (check_active_params, check_capacity_keep_mask, check_load_balancing_loss,  # noqa: F401
                  check_top_k_routing)
from .decoding import check_beam_loses, check_pass_at_k, check_repetition_penalty, check_top_p  # noqa: F401
from .lora import check_dequantize_nf4, check_lora_forward, check_lora_param_count, check_training_memory  # noqa: F401
from .sft import check_label_masking, check_sft_loss, check_packed_mask  # noqa: F401
from .dpo import (check_completion_logprob, check_dpo_loss, check_group_pairs, check_ipo_loss,  # noqa: F401
                  check_simpo_loss)
from .grpo import check_group_advantages, check_k3_kl, check_clipped_surrogate, check_informative_groups  # noqa: F401
from .rlhf import check_bradley_terry, check_gae, check_rloo_advantages  # noqa: F401
from .quant import check_forward_kl, check_group_absmax, check_layer_damage  # noqa: F401
from .evaluation import check_cohen_kappa, check_ngram_overlap, check_problems_needed  # noqa: F401
from .beyond import check_bm25, check_selective_scan  # noqa: F401
