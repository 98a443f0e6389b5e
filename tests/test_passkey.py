"""The passkey task and its small models, checked against transformers' RoPE / ALiBi code and torch's SDPA."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb
from transformers import Qwen3Config

from course_utils import passkey as pk


def test_batch_layout():
    gen = torch.Generator().manual_seed(0)
    ids, start = pk.passkey_batch(50, 40, n_digits=3, generator=gen)
    assert ids.shape == (50, 40) and (ids[:, 0] == pk.BOS).all() and (ids[:, -4] == pk.ASK).all()
    for row, s in zip(ids, start.tolist()):
        assert row[s] == pk.KEY and (row == pk.KEY).sum() == 1
        assert torch.equal(row[s + 1: s + 4], row[-3:]) and (row[-3:] < pk.N_DIGITS).all()
        filler = torch.cat([row[1:s], row[s + 4: -4]])
        assert ((filler >= pk.N_DIGITS) & (filler < pk.N_DIGITS + pk.N_FILLER)).all()  # digits only in the key
    assert start.min() >= 1 and start.max() <= 40 - 8
    fixed, _ = pk.passkey_batch(2, 40, key_start=torch.tensor([1, 32]))
    assert fixed[0, 1] == pk.KEY and fixed[1, 32] == pk.KEY and fixed[1, 36] == pk.ASK


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="length must be >= 2 \\* n_digits \\+ 3"):
        pk.passkey_batch(2, 8)
    with pytest.raises(ValueError, match="key_start must be"):
        pk.passkey_batch(2, 40, key_start=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="position must be one of"):
        pk.RetrievalLM(pk.RetrievalConfig(position="learned"))
    with pytest.raises(ValueError, match="a RoPE scaling needs position='rope'"):
        pk.RetrievalLM(pk.RetrievalConfig(position="alibi")).set_rope_scaling({"rope_type": "linear", "factor": 2.0})
    with pytest.raises(FileNotFoundError, match="python -m course_utils.passkey"):
        pk.load_retrieval_model("/nonexistent/rope.safetensors")


def _reference_attention(attn, x, position, cos=None, sin=None):
    """The same layer computed with transformers' RoPE / BLOOM's ALiBi and torch's SDPA, in float64."""
    B, T, _ = x.shape
    q, k, v = (p.double()(x).view(B, T, attn.n_heads, attn.head_dim).transpose(1, 2)
               for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    bias = torch.zeros(B, attn.n_heads, T, T, dtype=torch.float64)
    if position == "rope":
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    if position == "alibi":  # BLOOM adds slope * key position: softmax equals slope * (key - query) row by row
        bias = build_alibi_tensor(torch.ones(B, T), attn.n_heads, torch.float64).view(B, attn.n_heads, 1, T)
    bias = bias.masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return attn.o_proj.double()(out.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("position,scaling", [("rope", None), ("rope", {"rope_type": "yarn", "factor": 4.0}),
                                               ("rope", {"rope_type": "linear", "factor": 2.0}),
                                               ("alibi", None), ("nope", None)])
def test_attention_matches_library_reference(position, scaling):
    torch.manual_seed(1)
    cfg = pk.RetrievalConfig(position=position, d_model=32, n_heads=4, train_length=16)
    model = pk.RetrievalLM(cfg).set_rope_scaling(scaling, seq_len=64)
    attn = model.blocks[0].attn
    x = torch.randn(2, 64, 32)
    got = attn(x, model.inv_freq, model.attention_factor)
    cos = sin = None
    if position == "rope":
        rp = {"rope_theta": cfg.rope_base, **(scaling or {"rope_type": "default"})}
        if rp["rope_type"] == "yarn":
            rp["original_max_position_embeddings"] = 16
        qcfg = Qwen3Config(hidden_size=32, num_attention_heads=4, head_dim=8, max_position_embeddings=64,
                           rope_parameters=rp)
        inv_freq, factor = ROPE_INIT_FUNCTIONS[rp["rope_type"]](qcfg, "cpu") if scaling else (
            1.0 / cfg.rope_base ** (torch.arange(0, 8, 2).double() / 8), 1.0)
        angles = torch.arange(64).double()[:, None] * inv_freq.double()[None]
        emb = torch.cat([angles, angles], -1)
        cos, sin = emb.cos()[None] * factor, emb.sin()[None] * factor  # (1, T, D)
    ref = _reference_attention(attn, x.double(), position, cos, sin)
    assert torch.allclose(got.double(), ref, atol=1e-5), (got.double() - ref).abs().max()


def test_answer_scores_by_hand():
    ids = torch.tensor([[pk.BOS, pk.KEY, 3, 7, pk.ASK, 3, 7]])  # n_digits = 2
    logits = torch.zeros(1, 7, pk.VOCAB_SIZE)
    logits[0, 4, 3] = 10.0  # <ask> predicts 3: right
    logits[0, 5, 1] = 10.0  # after 3 it predicts 1: wrong
    assert pk._all_digits_right(logits, ids, 2).tolist() == [False]
    nll = pk.answer_nll(logits, ids, 2)
    z = math.log(math.exp(10) + pk.VOCAB_SIZE - 1)
    assert nll[0, 0].item() == pytest.approx(z - 10, abs=1e-5) and nll[0, 1].item() == pytest.approx(z, abs=1e-5)
    logits[0, 5, 7] = 20.0
    assert pk._all_digits_right(logits, ids, 2).tolist() == [True]


def test_ask_scores_are_the_last_query_row():
    torch.manual_seed(0)
    model = pk.RetrievalLM(pk.RetrievalConfig(d_model=32, n_heads=4, train_length=16))
    ids, _ = pk.passkey_batch(3, 24, generator=torch.Generator().manual_seed(0))
    scores = pk.ask_attention_scores(model, ids)  # (B, layers, H, T)
    ask = 24 - 4
    assert scores.shape == (3, 2, 4, 24)
    assert torch.isfinite(scores[..., : ask + 1]).all() and torch.isinf(scores[..., ask + 1:]).all()
    attn = model.blocks[0].attn  # layer 0 by hand: q of <ask> against every key, after RoPE
    x = model.blocks[0].norm1(model.embed(ids))
    q = attn.q_proj(x).view(3, 24, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(3, 24, 4, 8).transpose(1, 2)
    q, k = pk.apply_rope(q, torch.arange(24), model.inv_freq), pk.apply_rope(k, torch.arange(24), model.inv_freq)
    by_hand = torch.einsum("bhd,bhtd->bht", q[:, :, ask], k[:, :, : ask + 1]) / math.sqrt(8)
    assert torch.allclose(scores[:, 0, :, : ask + 1], by_hand, atol=1e-5)
    assert model.blocks[0].attn.scores is None  # nothing kept after the call


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = pk.RetrievalLM(pk.RetrievalConfig(d_model=32, n_heads=4, train_length=16))
    model.set_rope_scaling({"rope_type": "linear", "factor": 4.0})
    pk.save_retrieval_model(model, tmp_path / "m.safetensors")
    back = pk.load_retrieval_model(tmp_path / "m.safetensors")
    ids, _ = pk.passkey_batch(2, 40, generator=torch.Generator().manual_seed(1))
    assert back.scaling == {"rope_type": "linear", "factor": 4.0}
    assert torch.equal(back(ids), model.eval()(ids))


def test_short_training_learns_and_finetune_keeps_scaling():
    cfg = pk.RetrievalConfig(d_model=32, n_heads=4, train_length=24, n_digits=1)
    model, log = pk.train_retrieval(cfg, steps=150, log_every=50)
    assert log[-1]["loss"] < log[0]["loss"] - 0.5  # chance is ln 10 = 2.3 nats per digit
    pi = {"rope_type": "linear", "factor": 2.0}
    tuned, _ = pk.finetune_with_scaling(model, pi, 48, steps=5, log_every=5)
    assert tuned.scaling == pi and model.scaling is None
    assert torch.allclose(tuned.inv_freq, model.inv_freq / 2)


def test_study_restores_each_models_rope():
    model = pk.RetrievalLM(pk.RetrievalConfig(d_model=32, n_heads=4, train_length=16))
    before = model.inv_freq.clone()
    res = pk.passkey_study({"plain": (model, None), "dyn": (model, {"rope_type": "dynamic", "factor": 1.0})},
                           (16, 64), n=4)
    assert torch.equal(model.inv_freq, before) and model.scaling is None
    assert set(res) == {"plain", "dyn"} and res["dyn"][64]["correct"].shape == (4,)
    distance = res["plain"][16]["distance"]  # <ask> at 16 - 4, <key> in [1, 16 - 8]
    assert distance.max() <= 11 and distance.min() >= 4


@pytest.mark.parametrize("name", ["rope", "alibi", "nope", "rope-pi8"])
def test_committed_models_answer_at_their_length(name):
    model = pk.load_retrieval_model(pk.PASSKEY_DIR / f"{name}.safetensors")
    length = model.cfg.train_length * (8 if name == "rope-pi8" else 1)
    res = pk.passkey_eval(model, length, 64, seed=99)
    assert res["correct"].float().mean() >= 0.8, (name, res["correct"].float().mean())


def test_score_profile_weights_are_the_softmax_of_the_scores():
    torch.manual_seed(0)
    model = pk.RetrievalLM(pk.RetrievalConfig(d_model=32, n_heads=4, train_length=16))
    prof = pk.ask_score_profile(model, 48, 6, seed=4, bin_size=8)
    ids, start = pk.passkey_batch(6, 48, generator=torch.Generator().manual_seed(4))
    w = torch.softmax(pk.ask_attention_scores(model, ids)[:, -1], dim=-1)  # (n, H, T)
    assert torch.allclose(prof["key_weight"], w[torch.arange(6), :, start + 1].mean(-1), atol=1e-6)
    assert torch.allclose(prof["entropy"], -(w * w.clamp_min(1e-30).log()).sum(-1).mean(-1), atol=1e-5)
    assert (prof["distance"] > 0).all() and prof["filler_p99"].ge(prof["filler_mean"]).all()


def test_training_script_keeps_finished_models_and_logs_each(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--steps", "2", "--pi-steps", "1", "--pi-factor", "2"]
    pk.main(args)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alibi.safetensors", "nope.safetensors", "rope-pi2.safetensors", "rope.safetensors",
                     "training_log.json"]
    first = json.loads((tmp_path / "training_log.json").read_text())
    assert set(first["models"]) == {"rope", "alibi", "nope", "rope-pi2"} and first["models"]["rope-pi2"]["length"] == 128
    (tmp_path / "nope.safetensors").unlink()  # as if the run had stopped before NoPE finished
    capsys.readouterr()
    pk.main(args)
    out = capsys.readouterr().out
    assert "rope: kept" in out and "alibi: kept" in out and "nope: kept" not in out
    assert (tmp_path / "nope.safetensors").exists()
