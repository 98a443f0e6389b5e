"""course_utils: the heavy lifting behind the LLM course notebooks (one concept per module).

Modules in lecture order: env, models, data, pretrain · attention (01) · norms (02) · positional, passkey (03) ·
moe (04) · decoding (05) · lora, memory (06) · sft, train (07) · dpo (08) · grpo, rewards (09) ·
reward_model, ppo (10) · quant, distill (11) · evaluation (12; its accuracy tables serve every lab) · rag, editing,
ssm, prompting (13) · stats, book (error bars for the lesson checks, and your numbers next to
the stored ones) · checks (argument checks).
exercises and plotting have one module per lecture (exercises.attention, plotting.decoding, ...); attention, moe,
dpo, grpo, ppo, quant and evaluation are packages whose modules split the concept from its data, training and measurements.
"""

from . import (attention, book, checks, decoding, distill, dpo, editing, evaluation, exercises, grpo, lora,  # noqa: F401
               memory, moe, norms, passkey, positional, ppo, prompting, quant, rag, reward_model, rewards, sft, ssm,
               stats, train)
from .env import Profile, device, doctor, profile, seed_everything  # noqa: F401
from .models import load_model  # noqa: F401
from .attention import (Attention, KVCache, attention_entropy, causal_mask, kv_cache_bytes,  # noqa: F401
                        online_softmax, padding_mask, repeat_kv, scaled_dot_product_attention,
                        sliding_window_mask, tiled_attention)
from .norms import Block, LayerNorm, RMSNorm, SwiGLUMLP  # noqa: F401
from .positional import alibi_bias, alibi_slopes, apply_rope, rope_inv_freq, sinusoidal_positions  # noqa: F401
from .moe import MoE, TopKRouter, load_balancing_loss  # noqa: F401
from .decoding import (apply_repetition_penalty, apply_temperature, ban_repeated_ngrams, beam_search,  # noqa: F401
                       generate, min_p_filter, sample_next_token, top_k_filter, top_p_filter)
from .lora import LoRALinear, add_lora, dequantize_nf4, merge_lora, nf4_codebook, quantize_nf4  # noqa: F401
from .memory import KNOWN_MODELS, MemoryBreakdown, estimate_training_memory, measure_training_memory  # noqa: F401
from .sft import build_sft_example, sft_loss  # noqa: F401
from .train import TrainConfig  # noqa: F401
from .dpo import dpo_loss, ipo_loss, orpo_loss, sequence_logprobs, simpo_loss  # noqa: F401
from .grpo import GRPOConfig, grpo_loss, group_advantages, k3_kl, train_grpo  # noqa: F401
from .reward_model import bradley_terry_loss, train_reward_model  # noqa: F401
from .ppo import PPOConfig, gae, rloo_advantages, train_rlhf  # noqa: F401
from .quant import dequantize_absmax, gptq_quantize, quantize_absmax  # noqa: F401
from .distill import generalized_jsd_loss  # noqa: F401
from .stats import binomial_ci, check_above, check_gain, check_seeds  # noqa: F401
from .book import compare_with_book  # noqa: F401
from .widgets import (attention_explorer, decoding_explorer, memory_explorer, moe_explorer, norm_explorer,  # noqa: F401
                      quant_explorer, rag_explorer, rope_explorer)
