"""MLA against transformers' DeepseekV3Attention, and its absorbed / cached paths against the naive one."""

import pytest
import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

from course_utils.attention import KVCache
from course_utils.attention.mla import MLA


@pytest.mark.parametrize("q_lora_rank", [None, 24])
def test_mla_matches_deepseek_v3_attention(q_lora_rank):
    torch.manual_seed(0)
    cfg = DeepseekV3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=q_lora_rank,
                           kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, rope_interleave=False,
                           max_position_embeddings=128, attn_implementation="eager",
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    ref = DeepseekV3Attention(cfg, 0).double().eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    mine = MLA(64, 4, kv_lora_rank=16, q_lora_rank=q_lora_rank, nope_dim=8, rope_dim=4, v_dim=8).double()
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    cos, sin = DeepseekV3RotaryEmbedding(cfg)(x, torch.arange(11)[None].expand(2, -1))
    mask = torch.full((11, 11), float("-inf"), dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        expected, _ = ref(x, (cos.double(), sin.double()), mask)
        got = mine(x)
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()  # RMSNorm runs in float32


def test_absorbed_and_cached_decoding_equal_the_naive_path():
    torch.manual_seed(1)
    mla = MLA(48, 3, kv_lora_rank=12, nope_dim=8, rope_dim=4, v_dim=6).double()
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    with torch.no_grad():
        naive = mla(x)
        assert torch.allclose(mla(x, absorbed=True), naive, atol=1e-12)
        cache = KVCache()
        steps = [mla(x[:, :4], cache=cache, absorbed=True)] + [mla(x[:, t: t + 1], cache=cache, absorbed=True)
                                                              for t in range(4, 9)]
    assert torch.allclose(torch.cat(steps, dim=1), naive, atol=1e-12)
    assert cache.seq_len == 9 and cache.nbytes() == 2 * 9 * (12 + 4) * 8  # float64: 8 bytes per value
    assert mla.cache_values_per_token() == 16


def test_mla_rejects_bad_sizes():
    with pytest.raises(ValueError, match="kv_lora_rank must be a positive int"):
        MLA(32, 2, kv_lora_rank=0)
