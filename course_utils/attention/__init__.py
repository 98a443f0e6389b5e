"""Attention from scratch, in the order of lecture 01.

- mechanism: scaled dot-product attention, masks, MHA/GQA/MQA with a KV cache, the cache's size in bytes;
- efficient: the online softmax, tiled (FlashAttention-style) attention and linear attention;
- mla: multi-head latent attention (DeepSeek-V2) with its compressed cache and weight absorption;
- paged: PagedAttention (vLLM): a block-table KV cache and attention read through it;
- sparse: local + global and S2 (LongLoRA) attention patterns;
- sinks: first-token attention and massive activations, with and without an attention-output gate;
- dca: dual chunk attention, RoPE positions remapped chunk by chunk (ChunkLlama, Qwen2.5-1M);
- measure: what the lecture measures with them (the sqrt(d_k) study, KV-cache speed-up, time and memory per
  variant, attention maps of a real model).

Conventions: shapes use B batch, H heads, T query length, S key length, D head dim. Masks are boolean with
True = may attend. Entropies are in nats. Every name is importable from here: `from course_utils import attention`.
"""

from .mechanism import (DEEPSEEK_V2_MLA, Attention, KVCache, attention_entropy, causal_mask,  # noqa: F401
                        kv_cache_bytes, mla_cache_bytes, padding_mask, repeat_kv, scaled_dot_product_attention,
                        sliding_window_mask)
from .mla import MLA  # noqa: F401
from .paged import PagedKVCache, cache_waste, paged_attention  # noqa: F401
from .sparse import local_global_mask, s2_attention, s2_mask  # noqa: F401
from .sinks import sink_statistics  # noqa: F401
from .dca import dca_attention, dca_cases, dca_positions, dca_relative_positions  # noqa: F401
from .efficient import linear_attention, linear_attention_weights, online_softmax, tiled_attention  # noqa: F401
from .measure import (ATTENTION_VARIANTS, attention_maps, benchmark_attention, greedy_decode,  # noqa: F401
                      head_pattern_scores, kv_cache_speedup, peak_memory_bytes, repeated_sequence_study,
                      scaling_study)
