"""course_utils: the heavy lifting behind the LLM course notebooks (one concept per module)."""

from . import exercises  # noqa: F401  (cu.exercises.check_*)
from .env import Profile, device, doctor, profile, seed_everything
from .models import load_model
from . import grpo, rewards  # noqa: F401  (cu.grpo.*, cu.rewards.*)
from .grpo import GRPOConfig, grpo_loss, group_advantages, k3_kl, train_grpo  # noqa: F401
from . import lora, memory  # noqa: F401  (06 LoRA / QLoRA / memory, issue 7)
from .lora import LoRALinear, add_lora, dequantize_nf4, merge_lora, nf4_codebook, quantize_nf4  # noqa: F401
from .memory import KNOWN_MODELS, MemoryBreakdown, estimate_training_memory, measure_training_memory  # noqa: F401
from .widgets import memory_explorer  # noqa: F401
from . import sft, train  # noqa: F401  (cu.sft.*, cu.train.*)
from .sft import build_sft_example, sft_loss  # noqa: F401
from .train import TrainConfig  # noqa: F401
from . import dpo  # noqa: F401  (cu.dpo.*)
from .dpo import dpo_loss, sequence_logprobs, simpo_loss  # noqa: F401
from . import decoding  # noqa: F401  (cu.decoding.*)
from .decoding import (apply_repetition_penalty, apply_temperature, ban_repeated_ngrams, beam_search,  # noqa: F401
                       generate, min_p_filter, sample_next_token, top_k_filter, top_p_filter)
from . import norms, positional
from .norms import Block, LayerNorm, RMSNorm, SwiGLUMLP
from .positional import alibi_bias, alibi_slopes, apply_rope, rope_inv_freq, sinusoidal_positions
from . import moe  # noqa: F401  (cu.moe.*)
from .moe import MoE, TopKRouter, load_balancing_loss  # noqa: F401
from . import attention  # noqa: F401  (cu.attention.*)
from .attention import (Attention, KVCache, attention_entropy, causal_mask, kv_cache_bytes,  # noqa: F401
                        online_softmax, padding_mask, repeat_kv, scaled_dot_product_attention,
                        sliding_window_mask, tiled_attention)
