"""Decoding: filters vs transformers' logits processors, generate/beam_search vs model.generate, metrics, bad inputs."""

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import course_utils as cu
from course_utils import decoding as dec


def random_logits(seed, batch, vocab):
    """Random logits with ties (rounded values, duplicated maxima) and some -inf entries."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, vocab, generator=gen) * 3).round(decimals=1)  # many ties
    logits[0, : min(3, vocab)] = logits[0].max()  # tied maxima in row 0
    drop = torch.rand(batch, vocab, generator=gen) < 0.1
    drop[:, 0] = False  # keep every row finite somewhere
    return logits.masked_fill(drop, -float("inf"))


def random_ids(seed, batch, length, vocab):
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, min(vocab, 6), (batch, length), generator=gen)  # small alphabet: repeated n-grams


def assert_same(got, expected):
    assert got.shape == expected.shape
    same_inf = torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    diff = (got[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    assert same_inf and diff <= 1e-6, f"max_diff {diff}, -inf pattern equal: {same_inf}"


SHAPES = [(1, 7), (3, 50), (4, 963), (2, 1000)]


@pytest.mark.parametrize("batch,vocab", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_filters_match_transformers(batch, vocab, seed):
    logits, ids = random_logits(seed, batch, vocab), random_ids(seed, batch, 12, vocab)
    for t in (0.3, 1.0, 2.5):
        assert_same(dec.apply_temperature(logits, t), TemperatureLogitsWarper(t)(ids, logits.clone()))
    for k in (1, 3, vocab, vocab + 5):
        assert_same(dec.top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
        assert_same(dec.top_k_filter(logits, k, 2), TopKLogitsWarper(k, min_tokens_to_keep=2)(ids, logits.clone()))
    for p in (0.05, 0.5, 0.9, 0.999, 1.0):
        assert_same(dec.top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits.clone()))
        assert_same(dec.top_p_filter(logits, p, 3), TopPLogitsWarper(p, min_tokens_to_keep=3)(ids, logits.clone()))
    for p in (0.0, 0.05, 0.3, 1.0):
        assert_same(dec.min_p_filter(logits, p), MinPLogitsWarper(p)(ids, logits.clone()))
        assert_same(dec.min_p_filter(logits, p, 2), MinPLogitsWarper(p, min_tokens_to_keep=2)(ids, logits.clone()))
    for penalty in (0.5, 1.2, 3.0):
        assert_same(dec.apply_repetition_penalty(logits, ids, penalty),
                    RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone()))
    for n in (1, 2, 3, 5, 13):
        assert_same(dec.ban_repeated_ngrams(logits, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, logits.clone()))


def test_top_k_zero_keeps_all_and_inputs_not_modified():
    logits = random_logits(5, 2, 20)
    before = logits.clone()
    assert_same(dec.top_k_filter(logits, 0), logits)
    dec.top_p_filter(logits, 0.5), dec.apply_repetition_penalty(logits, random_ids(5, 2, 4, 20), 1.5)
    assert_same(logits, before)


def test_penalty_rules_differ_by_hand():
    # logits log(0.5), log(0.3), log(0.2); token 0 seen, penalty 2.
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    ids = torch.tensor([[0]])
    notes = dec.divide_probability_penalty(probs, ids, 2.0)
    torch.testing.assert_close(notes, torch.tensor([[0.25, 0.3, 0.2]]) / 0.75)
    ctrl = dec.apply_repetition_penalty(probs.log(), ids, 2.0).softmax(-1)
    expected = torch.tensor([0.25, 0.3, 0.2])  # log 0.5 * 2 = log 0.25 (negative logit is multiplied)
    torch.testing.assert_close(ctrl, (expected / expected.sum())[None])
    shifted = dec.apply_repetition_penalty(probs.log() + 10.0, ids, 2.0).softmax(-1)  # positive logits divide
    assert shifted[0, 0] < 0.01, "a positive logit divided by 2 should lose most of its probability"


@pytest.fixture(scope="module")
def tiny():
    cu.profile("ci")
    return cu.load_model("course-tiny", device="cpu")


PROMPTS = ["Once upon a time,", "Mia was a", "Question: What is 12 + 34? Answer:", "One day, a dog named Tom"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_matches_model_generate(tiny, use_cache):
    model, tok = tiny
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        ref = model.generate(ids, max_new_tokens=50, do_sample=False, use_cache=use_cache)
        ours = dec.generate(model, ids, 50, strategy="greedy", use_cache=use_cache)
        assert torch.equal(ours, ref), f"{prompt!r}: {tok.decode(ours[0])!r} vs {tok.decode(ref[0])!r}"


def test_greedy_with_processors_and_padding_matches(tiny):
    model, tok = tiny
    tok.padding_side = "left"
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    kw = dict(repetition_penalty=1.2, no_repeat_ngram_size=3, min_new_tokens=30)
    ref = model.generate(**batch, max_new_tokens=40, do_sample=False, **kw)
    ours = dec.generate(model, batch.input_ids, 40, attention_mask=batch.attention_mask, **kw)
    assert torch.equal(ours, ref)
    ref = model.generate(**batch, max_new_tokens=30, do_sample=False, suppress_tokens=tok.all_special_ids)
    ours = dec.generate(model, batch.input_ids, 30, attention_mask=batch.attention_mask,
                        suppress_tokens=tok.all_special_ids)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("num_beams,length_penalty,early_stopping,n_return",
                         [(4, 1.0, False, 1), (3, 0.5, True, 2), (5, 2.0, "never", 3), (2, -1.0, False, 1)])
def test_beam_search_matches_model_generate(tiny, use_cache, num_beams, length_penalty, early_stopping, n_return):
    model, tok = tiny
    for prompt in PROMPTS[:3]:
        ids = tok(prompt, return_tensors="pt").input_ids
        ref = model.generate(ids, max_new_tokens=30, do_sample=False, num_beams=num_beams, use_cache=use_cache,
                             length_penalty=length_penalty, early_stopping=early_stopping,
                             num_return_sequences=n_return)
        ours = dec.beam_search(model, ids, num_beams, 30, length_penalty, early_stopping=early_stopping,
                               num_return_sequences=n_return, use_cache=use_cache)
        assert ours.shape == ref.shape and torch.equal(ours, ref), f"{prompt!r}: {tok.batch_decode(ours)} vs {tok.batch_decode(ref)}"


def test_seeded_sampling_reproducible_and_matches_transformers(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[:1] * 3, return_tensors="pt").input_ids
    kw = dict(temperature=0.8, top_k=20, top_p=0.9)
    a = dec.generate(model, ids, 30, strategy="sample", generator=torch.Generator().manual_seed(7), **kw)
    b = dec.generate(model, ids, 30, strategy="sample", generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a, b)
    torch.manual_seed(7)  # model.generate draws from the global generator
    ref = model.generate(ids, max_new_tokens=30, do_sample=True, **kw)
    assert torch.equal(a, ref)


def test_metrics_by_hand():
    assert dec.repetition_rate([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)
    assert dec.distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert dec.distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert dec.ends_in_loop([5, 6, 7] * 10) and not dec.ends_in_loop(list(range(40)))
    assert dec.majority_vote(["3", None, "4", "4", "3"]) == "3"
    assert dec.majority_vote([None]) is None
    assert dec.best_of_n(["a", "b", "c"], [0.1, 0.7, 0.7]) == "b"
    assert dec.extract_answer(" 46.") == "46" and dec.extract_answer(" [CAT]. Then") == "[CAT]"



def _loop_reference(tokens, tail, n, min_repeated):
    """Brute force: for each n-gram starting in the tail, search the whole earlier text for it."""
    if len(tokens) < tail + n - 1:
        return False
    starts = range(len(tokens) - tail, len(tokens) - n + 1)
    hits = [any(tokens[j:j + n] == tokens[i:i + n] for j in range(i)) for i in starts]
    return sum(hits) >= min_repeated * len(hits)


def test_ends_in_loop_against_brute_force():
    rng = torch.Generator().manual_seed(0)
    cases = [[5, 6, 7] * 10, list(range(40)), list(range(20)) * 3, list(range(30)) + [1, 2, 3, 4] * 6]
    cases += [torch.randint(0, k, (60,), generator=rng).tolist() for k in (2, 3, 5, 50) for _ in range(5)]
    for tokens in cases:
        for tail, n, frac in ((24, 4, 0.8), (24, 4, 1.0), (12, 2, 0.5), (30, 3, 0.9)):
            assert dec.ends_in_loop(tokens, tail, n, frac) == _loop_reference(tokens, tail, n, frac), (tokens, tail, n, frac)
    # a near-exact repeat with a period longer than the tail still counts
    block = list(range(100, 130))
    assert dec.ends_in_loop(block + block + block[:10]) and not dec.ends_in_loop(block + list(range(200, 230)))
    assert not dec.ends_in_loop([1, 2, 3] * 5)  # shorter than the tail


@pytest.mark.parametrize("kw, name", [(dict(tail=0), "tail"), (dict(n=0), "n"), (dict(min_repeated=0.0), "min_repeated"),
                                      (dict(min_repeated=1.5), "min_repeated")])
def test_ends_in_loop_bad_inputs(kw, name):
    with pytest.raises(ValueError, match=name):
        dec.ends_in_loop([1, 2, 3] * 20, **kw)

def test_distribution_stats_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    stats = dec.distribution_stats(logits, dec.top_k_filter(logits, 2))
    probs = logits.softmax(-1)[0]
    assert int(stats["n_kept"]) == 2
    assert float(stats["mass_kept"]) == pytest.approx(float(probs[:2].sum()))
    q = probs[:2] / probs[:2].sum()
    assert float(stats["entropy"]) == pytest.approx(float(-(q * q.log()).sum()), rel=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda x, i: dec.apply_temperature(x, 0.0), "temperature must be in (0.0"),
    (lambda x, i: dec.apply_temperature(x, -1), "temperature must be in"),
    (lambda x, i: dec.top_p_filter(x, 1.5), "top_p must be in (0.0, 1.0], got 1.5"),
    (lambda x, i: dec.top_p_filter(x, 0.0), "top_p must be in"),
    (lambda x, i: dec.top_k_filter(x, -1), "top_k must be an int >= 0, got -1"),
    (lambda x, i: dec.min_p_filter(x, 1.1), "min_p must be in [0.0, 1.0]"),
    (lambda x, i: dec.apply_repetition_penalty(x, i, 0.0), "penalty must be in (0.0"),
    (lambda x, i: dec.ban_repeated_ngrams(x, i, 0), "no_repeat_ngram_size must be an int >= 1, got 0"),
    (lambda x, i: dec.repetition_rate([1, 2], 0), "n must be an int >= 1"),
    (lambda x, i: dec.warp_logits(x, order=("top_k", "bogus")), "order must list"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    x, ids = random_logits(0, 2, 10), random_ids(0, 2, 5, 10)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)").replace("]", r"\]")):
        call(x, ids)


def test_bad_generate_args(tiny):
    model, tok = tiny
    ids = tok("Once", return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="strategy must be one of"):
        dec.generate(model, ids, 5, strategy="nucleus")
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        dec.generate(model, ids, 0)
    with pytest.raises(ValueError, match="top_p must be in"):
        dec.generate(model, ids, 5, strategy="sample", top_p=2.0)
    with pytest.raises(ValueError, match="num_beams must be an int >= 1"):
        dec.beam_search(model, ids, 0, 5)
    with pytest.raises(TypeError, match="input_ids must be a LongTensor"):
        dec.generate(model, ids.float(), 5)


def test_filter_plot_title_reads_right_at_one_token():
    """top-k = 1 keeps one token: the title says "1 token" and an entropy of 0, never "-0.00"."""
    import matplotlib.pyplot as plt

    from course_utils.decoding import filter_view
    from course_utils.plotting import plot_next_token_filter

    class Tok:
        def decode(self, ids):
            return f"t{ids[0]}"

    logits = torch.tensor([5.0, 1.0, 0.5, -2.0])
    fig, ax = plot_next_token_filter(filter_view(logits, torch.tensor([[3]]), top_k=1), Tok(), top=4)
    title = ax.get_title()
    assert "kept 1 token (" in title and "-> 0.00 nats" in title and "-0.00" not in title, title
    plt.close(fig)
