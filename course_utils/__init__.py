"""course_utils: the heavy lifting behind the LLM course notebooks (one concept per module)."""

from . import exercises  # noqa: F401  (cu.exercises.check_*)
from .env import Profile, device, doctor, profile, seed_everything
from .models import load_model
from . import attention  # noqa: F401  (cu.attention.*)
from .attention import (Attention, KVCache, attention_entropy, causal_mask, kv_cache_bytes,  # noqa: F401
                        online_softmax, padding_mask, repeat_kv, scaled_dot_product_attention,
                        sliding_window_mask, tiled_attention)
