import json

import pytest
import torch
from transformers import Qwen3ForCausalLM

from course_utils import load_model
from course_utils.data import make_tasks, pretraining_corpus
from course_utils.models import COURSE_TINY_DIR


def test_course_tiny_loads_offline_as_qwen3(tiny):
    model, tok = tiny
    assert isinstance(model, Qwen3ForCausalLM) and not model.training
    n = sum(p.numel() for p in model.parameters())
    assert 2_000_000 < n < 5_000_000
    assert (COURSE_TINY_DIR / "model.safetensors").stat().st_size < 10 * 2**20
    assert model.config.max_position_embeddings == 256
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"


def test_course_model_env_var_selects_default(monkeypatch, tmp_path):
    model, tok = load_model("course-tiny", device="cpu")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    monkeypatch.setenv("COURSE_MODEL", str(tmp_path))
    other, _ = load_model(device="cpu")
    assert other.config.hidden_size == model.config.hidden_size


def test_save_load_round_trip_gives_identical_logits(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model(str(tmp_path), device="cpu")
    ids = tok("Once upon a time, there was a cat named Tom.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert tok2("Tom 123").input_ids == tok("Tom 123").input_ids


def test_seeded_sampling_is_reproducible(tiny):
    model, tok = tiny
    ids = tok("Once upon a time,", return_tensors="pt").input_ids

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(ids, max_new_tokens=30, do_sample=True, temperature=0.8, top_p=0.9)

    assert torch.equal(sample(3), sample(3))


def test_course_tiny_writes_language_not_noise(tiny):
    model, tok = tiny
    ids = tok("Once upon a time,", return_tensors="pt").input_ids
    text = tok.decode(model.generate(ids, max_new_tokens=40, do_sample=False)[0], skip_special_tokens=True)
    words = text.replace(".", " ").replace(",", " ").split()
    known = set(" ".join(pretraining_corpus(300, seed=5)).replace(".", " ").replace(",", " ").split())
    assert len(words) > 20 and sum(w in known for w in words) / len(words) > 0.9, text


def test_heldout_perplexity_is_low(tiny):
    from course_utils.pretrain import pack, perplexity

    model, tok = tiny
    rows = pack(tok, pretraining_corpus(60, seed=99), 128)
    ppl = perplexity(model, rows)
    uniform = len(tok)
    assert ppl < 3.0 < uniform, ppl  # uniform guessing would be ~963


def test_tokenizer_splits_digits_and_round_trips(tiny):
    _, tok = tiny
    text = "What is 123 + 45? Answer: 168."
    pieces = tok.convert_ids_to_tokens(tok(text).input_ids)
    assert all(len(p.strip("Ġ")) == 1 for p in pieces if any(c.isdigit() for c in p))
    assert tok.decode(tok(text).input_ids) == text


def test_chat_template_marks_assistant_tokens(tiny):
    _, tok = tiny
    task = make_tasks(1, "train", seed=0)[0]
    messages = [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": task.answer}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assistant = tok.decode([i for i, m in zip(ids, mask) if m])
    assert assistant == task.answer + "<|im_end|>"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_minilm_is_real_pretrained_encoder():
    model, tok = load_model("minilm", device="cpu")
    sents = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    batch = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert len(out.attentions) == 6 and out.attentions[0].shape[1] == 12
    row_sums = torch.stack([a.sum(-1) for a in out.attentions])
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums))
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((out.last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3, sim  # paraphrases are close, unrelated text is not


def test_unknown_name_raises_clear_error():
    with pytest.raises(ValueError, match=r"name must be one of \('course-tiny', 'minilm'\).*got 'gpt-5'"):
        load_model("gpt-5")


def test_folder_without_config_raises(tmp_path):
    with pytest.raises(ValueError, match="without config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_raises_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="unreachable.*course-tiny"):
        load_model("Qwen/Qwen3-0.6B", device="cpu")


def test_bad_dtype_and_attention_are_rejected():
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        load_model(dtype="float32")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        load_model(attn_implementation="fast")


def test_pretrain_smoke_run_produces_loadable_model(tmp_path):
    from course_utils.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         n_documents=300, n_heldout_documents=20, steps=3, batch_size=2, warmup=1)
    log = pretrain(cfg, tmp_path)
    assert json.loads((tmp_path / "training_log.json").read_text())["n_params"] == log["n_params"]
    model, tok = load_model(str(tmp_path), device="cpu")
    assert model.config.num_hidden_layers == 1 and tok.chat_template is not None
    assert log["heldout_perplexity"] < len(tok) * 1.5  # finite and near-uniform at worst after 3 steps
