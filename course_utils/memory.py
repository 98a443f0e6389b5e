"""GPU-memory accounting for training: parameters, gradients, optimizer states, activations."""

from __future__ import annotations

# Public architecture configs (from each model's config.json on the Hugging Face hub), as plain data.
# Keys follow transformers' config names so `AutoConfig.for_model(model_type, **cfg)` rebuilds them.
KNOWN_MODELS: dict[str, dict] = {
    "Qwen/Qwen3-0.6B": dict(
        model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-1.7B": dict(
        model_type="qwen3", hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, intermediate_size=6144, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-4B": dict(
        model_type="qwen3", hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=9728, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3", hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=12288, vocab_size=151936,
        tie_word_embeddings=False, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "Qwen/Qwen3-14B": dict(
        model_type="qwen3", hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, intermediate_size=17408, vocab_size=151936,
        tie_word_embeddings=False, max_position_embeddings=40960, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=False, qk_norm=True),
    "meta-llama/Llama-3.1-8B": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256,
        tie_word_embeddings=False, max_position_embeddings=131072, rope_theta=500_000.0,
        rms_norm_eps=1e-5, attention_bias=False, qk_norm=False),
    "meta-llama/Llama-3.2-1B": dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
        tie_word_embeddings=True, max_position_embeddings=131072, rope_theta=500_000.0,
        rms_norm_eps=1e-5, attention_bias=False, qk_norm=False),
    "Qwen/Qwen2.5-7B": dict(
        model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, head_dim=128, intermediate_size=18944, vocab_size=152064,
        tie_word_embeddings=False, max_position_embeddings=131072, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=True, qk_norm=False),
    "Qwen/Qwen2.5-0.5B": dict(
        model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, head_dim=64, intermediate_size=4864, vocab_size=151936,
        tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, attention_bias=True, qk_norm=False),
}
