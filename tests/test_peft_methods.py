"""PEFT families from scratch (course_utils.peft_methods) vs peft, a float64 hand computation and closed forms;
LoRA+ parameter groups vs peft's create_loraplus_optimizer; answer_correct vs greedy generation."""

import copy
from types import SimpleNamespace

import pytest
import torch

from course_utils import lora as L
from course_utils import peft_methods as P

peft = pytest.importorskip("peft")


def _inputs(tok, seed):
    """A padded batch of two different-length prompts (fresh per seed) and labels with the padding ignored."""
    gen = torch.Generator().manual_seed(seed)
    words = ["What is", "Reverse the word", "cat", "dog", "Sort these numbers:", "1", "22", "333", "hat"]
    texts = [" ".join(words[i] for i in torch.randint(len(words), (n,), generator=gen).tolist()) for n in (3, 7)]
    enc = tok(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_prompt_tuning_matches_peft(tiny, seed):
    model, tok = tiny
    theirs = peft.get_peft_model(copy.deepcopy(model), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    ours = P.PromptTuning(copy.deepcopy(model), 5, seed=seed)
    with torch.no_grad():
        ours.prompt.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed))
        theirs.prompt_encoder.default.embedding.weight.copy_(ours.prompt)
    batch = _inputs(tok, seed)
    a, b = theirs(**batch), ours(**batch)
    assert torch.allclose(a.logits[:, 5:], b.logits, atol=1e-5)
    assert abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_tuning_matches_peft(tiny, seed):
    model, tok = tiny
    c = model.config
    theirs = peft.get_peft_model(copy.deepcopy(model), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6))
    ours = P.PrefixTuning(copy.deepcopy(model), 6, seed=seed)  # peft: (n, layers * 2 * kv_heads * head_dim)
    with torch.no_grad():
        theirs.prompt_encoder.default.embedding.weight.copy_(ours.prefix.reshape(6, -1))
    batch = _inputs(tok, seed)
    a, b = theirs(**batch), ours(**batch)
    assert ours.prefix.shape == (6, c.num_hidden_layers, 2, c.num_key_value_heads, c.head_dim)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_ia3_matches_peft(tiny, seed):
    model, tok = tiny
    cfg = peft.IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                         feedforward_modules=["down_proj"])
    theirs = peft.get_peft_model(copy.deepcopy(model), cfg)
    ours = P.add_ia3(copy.deepcopy(model))
    gen = torch.Generator().manual_seed(seed)
    ours_params = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "ia3_l" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
                ours_params[name.replace("base_model.model.", "").replace(".default", "")].copy_(p.flatten())
    batch = _inputs(tok, seed)
    a, b = theirs(**batch), ours(**batch)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert L.count_parameters(ours)[0] == theirs.get_nb_trainable_parameters()[0]


def test_adapter_matches_float64_and_starts_as_identity(tiny):
    model, tok = tiny
    batch = _inputs(tok, 3)
    adapted = P.add_adapters(copy.deepcopy(model), 4)
    with torch.no_grad():
        assert torch.equal(adapted(**batch).logits, model(**batch).logits)  # W_up = 0: the identity
    gen = torch.Generator().manual_seed(4)
    layer = P.LinearThenAdapter(torch.nn.Linear(12, 10), 3)
    with torch.no_grad():
        for p in layer.adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(5, 12, generator=gen)
    W, b = layer.base_layer.weight.double(), layer.base_layer.bias.double()
    d, u = layer.adapter.down, layer.adapter.up
    h = x.double() @ W.T + b
    z = h @ d.weight.double().T + d.bias.double()
    gelu = 0.5 * z * (1 + torch.erf(z / 2**0.5))
    expected = h + gelu @ u.weight.double().T + u.bias.double()  # down first, then up (Houlsby et al.)
    assert torch.allclose(layer(x).double(), expected, atol=1e-5)


def test_trainable_counts_match_closed_forms(tiny):
    model, _ = tiny
    c = model.config
    d, L_, kv, ff = c.hidden_size, c.num_hidden_layers, c.num_key_value_heads * c.head_dim, c.intermediate_size
    expected = {
        "adapter": 2 * L_ * (2 * d * 4 + 4 + d),  # two adapters per layer: down (d x 4 + 4), up (4 x d + d)
        "prefix": 18 * L_ * 2 * kv,  # a key and a value per layer for each virtual token
        "prompt": 72 * d,
        "(IA)3": L_ * (2 * kv + ff),  # keys, values, the MLP's inner activations
        "LoRA": L.count_parameters(L.add_lora(copy.deepcopy(model), "all-linear", r=1, alpha=2))[0],
    }
    sizes = {"adapter": 4, "prefix": 18, "prompt": 72, "(IA)3": 1, "LoRA": 1}
    for method, n in expected.items():
        m = P.attach(copy.deepcopy(model), method, sizes[method])
        trainable, _ = L.count_parameters(m)
        assert trainable == n, (method, trainable, n)
        assert trainable == sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_lora_plus_groups_match_peft(tiny):
    from peft.optimizers import create_loraplus_optimizer

    model, _ = tiny
    pm = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    theirs = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16)
    lr_theirs = {id(p): g["lr"] for g in theirs.param_groups for p in g["params"]}
    lr_ours = {id(p): g["lr"] for g in L.lora_plus_groups(pm, 1e-3, 16) for p in g["params"]}
    assert lr_ours == lr_theirs
    assert sorted(set(lr_ours.values())) == [1e-3, 16e-3]


class _Oracle(torch.nn.Module):
    """A stand-in LM whose top choice at every position is the next token of one fixed text."""

    def __init__(self, ids, vocab):
        super().__init__()
        self.ids, self.vocab = ids, vocab

    def forward(self, input_ids):
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        for t in range(min(input_ids.shape[1], len(self.ids)) - 1):
            logits[0, t, self.ids[t + 1]] = 1.0
        return SimpleNamespace(logits=logits)


def test_answer_correct_checks_every_answer_token_and_the_end(tiny):
    _, tok = tiny
    text = L.task_texts(1, split="test", seed=5, families=["sort"])[0]
    oracle = _Oracle(tok(text + tok.eos_token)["input_ids"], len(tok))
    prompt, answer = text.split("<<")
    assert L.answer_correct(oracle, tok, [text]) == [True]
    changed = [prompt + "<<" + answer.replace(">>", " 7>>"),  # an extra number
               prompt + "<<" + answer[:-3] + ">>"]  # the last digit missing
    assert L.answer_correct(oracle, tok, changed) == [False, False]


def test_bad_inputs_name_the_argument(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="method"):
        P.attach(copy.deepcopy(model), "bitfit")
    with pytest.raises(ValueError, match="n_virtual"):
        P.PromptTuning(copy.deepcopy(model), 0)
    with pytest.raises(ValueError, match="feedforward"):
        P.add_ia3(copy.deepcopy(model), targets=("k_proj",), feedforward=("down_proj",))
    with pytest.raises(ValueError, match="lr_ratio"):
        L.lora_plus_groups(L.add_lora(copy.deepcopy(model), "all-linear", r=1, alpha=2), 1e-3, 0)
    with pytest.raises(ValueError, match="<<"):
        L.answer_correct(model, tiny[1], ["no answer marker"])
