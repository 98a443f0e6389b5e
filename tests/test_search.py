"""Diverse beam search and contrastive search against the decoders they reduce to, and a hand-worked step."""

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu
from course_utils import decoding as dec
from course_utils import search


@pytest.fixture(scope="module")
def tiny():
    model, tok = cu.load_model("course-tiny", device="cpu")
    return model.eval(), tok


def _prompt(tok, text="Once upon a time, there was a"):
    return tok(text, return_tensors="pt").input_ids


def test_one_group_is_beam_search(tiny):
    model, tok = tiny
    x = _prompt(tok)
    ours = search.diverse_beam_search(model, x, 4, 1, 12, suppress_tokens=tok.all_special_ids)
    ref = dec.beam_search(model, x, 4, 12, num_return_sequences=4, suppress_tokens=tok.all_special_ids)
    assert torch.equal(ours, ref)


def test_groups_without_penalty_repeat_and_with_penalty_differ(tiny):
    model, tok = tiny
    x = _prompt(tok, "One day, a dog named Tom")
    same = search.diverse_beam_search(model, x, 4, 2, 8, diversity_penalty=0.0, suppress_tokens=tok.all_special_ids)
    assert torch.equal(same[:2], same[2:])  # two identical groups
    apart = search.diverse_beam_search(model, x, 4, 2, 8, diversity_penalty=50.0, suppress_tokens=tok.all_special_ids)
    T = x.shape[1]
    assert torch.equal(apart[:2], same[:2])  # the first group is never penalized
    assert set(apart[2:, T].tolist()).isdisjoint(apart[:2, T].tolist())  # a huge penalty forbids group 1's first tokens


def test_contrastive_search_alpha_zero_is_greedy(tiny):
    model, tok = tiny
    x = torch.cat([_prompt(tok)[:, :5], _prompt(tok, "Mia was a happy girl who")[:, :5]], dim=0)  # (2, 5)
    ours = search.contrastive_search(model, x, 10, top_k=4, alpha=0.0, suppress_tokens=tok.all_special_ids)
    ref = dec.generate(model, x, 10, suppress_tokens=tok.all_special_ids)
    assert torch.equal(ours, ref)


def test_contrastive_step_by_hand(tiny):
    model, tok = tiny
    x = _prompt(tok)
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
        probs = out.logits[0, -1].double().softmax(-1)
        top_p, top_i = probs.topk(3)
        context = out.hidden_states[-1][0].double()  # (T, d)
        scores = []
        for p, v in zip(top_p, top_i):
            h = model(input_ids=torch.cat([x, v.view(1, 1)], 1), output_hidden_states=True).hidden_states[-1][0, -1]
            penalty = max(F.cosine_similarity(h.double(), c, dim=0).item() for c in context)
            scores.append(0.5 * p.item() - 0.5 * penalty)
    expected = top_i[int(torch.tensor(scores).argmax())]
    got = search.contrastive_search(model, x, 1, top_k=3, alpha=0.5)[0, -1]
    assert got.item() == expected.item()


def test_bad_arguments(tiny):
    model, tok = tiny
    x = _prompt(tok)
    with pytest.raises(ValueError, match="divisible"):
        search.diverse_beam_search(model, x, 4, 3, 2)
    with pytest.raises(ValueError, match="alpha"):
        search.contrastive_search(model, x, 2, alpha=1.5)
    with pytest.raises(ValueError, match="one prompt"):
        search.diverse_beam_search(model, x.repeat(2, 1), 2, 1, 2)
