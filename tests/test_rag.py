"""Lecture 13's retrieval-augmented generation: BM25 against rank_bm25, the dense retriever, the reader's scoring."""

import random

import pytest
import torch
from rank_bm25 import BM25Okapi

from course_utils import load_model, rag
from course_utils.data import NAMES, WORDS


@pytest.fixture(scope="module")
def tiny():
    return load_model("course-tiny", device="cpu")


def _corpus(rng, n):
    return [" ".join(rng.choice(WORDS[:20]) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_bm25_equals_rank_bm25(seed):
    rng = random.Random(1300 + seed)
    passages = _corpus(rng, rng.randint(5, 40))
    k1, b = rng.uniform(0.5, 2.0), rng.uniform(0.2, 1.0)
    ours = rag.BM25(passages, k1=k1, b=b)
    ref = BM25Okapi([rag.words(p) for p in passages], k1=k1, b=b)
    for query in _corpus(rng, 5):
        expected = torch.tensor(ref.get_scores(rag.words(query)), dtype=torch.float64)
        got = ours.scores(query)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12,
                                   msg=lambda m: f"BM25 vs rank_bm25 on {query!r}: {m}")


def test_bm25_hand_worked():
    # 'cat' is in 1 of 3 passages: idf = log((3 - 1 + 0.5) / (1 + 0.5)); passage 0 has f = 1 and |d| = avgdl = 2,
    # so its score is idf * 1 * (k1 + 1) / (1 + k1) = idf; the others do not contain 'cat'
    bm = rag.BM25(["cat dog", "dog fox", "fox owl"], k1=1.5, b=0.75)
    expected = torch.log(torch.tensor(2.5 / 1.5, dtype=torch.float64))
    torch.testing.assert_close(bm.scores("Cat!"), torch.stack([expected, torch.zeros((), dtype=torch.float64),
                                                                torch.zeros((), dtype=torch.float64)]))


def test_world_facts_and_questions():
    world = rag.make_world(7)
    assert len(world) == len(NAMES) * len(rag.RELATIONS)
    assert world == rag.make_world(7) and world != rag.make_world(8)
    for name in NAMES:
        mine = {f.relation: f for f in world if f.name == name}
        assert mine["home"].value != mine["born"].value
        for f in mine.values():
            assert f.value in f.choices and f.value in f.passage and name in f.question


def test_retrieve_and_recall():
    bm = rag.BM25(["Tom lives near the lake.", "Mia lives near the park.", "Tom has a pet owl."])
    idx, scores = rag.retrieve(bm, "Where was Tom born?", 2)
    assert set(idx) == {0, 2} and scores[0] >= scores[1]
    assert rag.recall_at_k([[2, 0, 1], [1, 2, 0]], [0, 0], 2) == [True, False]
    with pytest.raises(ValueError, match="k must be"):
        rag.retrieve(bm, "Tom", 4)


def test_dense_scores_are_cosines_of_unpadded_sentence_embeddings():
    encoder, etok = load_model("minilm", device="cpu")
    passages = ["Tom lives near the lake.", "Mia has a pet owl.", "Ben keeps a very old and shiny red drum at home."]
    dense = rag.DenseRetriever(passages, encoder, etok, batch_size=3)  # padded together
    query = "Where does Tom live?"
    with torch.no_grad():
        ref = []
        for text in [query] + passages:  # one at a time: no padding at all
            hidden = encoder(**etok(text, return_tensors="pt")).last_hidden_state[0]  # (T, 384)
            ref.append(hidden.mean(0))
    ref = torch.stack(ref)
    expected = torch.nn.functional.cosine_similarity(ref[:1], ref[1:])
    torch.testing.assert_close(dense.scores(query), expected, atol=1e-5, rtol=1e-5)


def test_answer_logprobs_equal_unbatched_next_token_logprobs(tiny):
    model, tok = tiny
    rng = random.Random(1301)
    world = rag.make_world(3)
    facts = rng.sample(world, 6)
    prompts = [rag.reader_prompt(rag.training_context(f, world, rng), f.question) for f in facts]
    choices = ["the lake", "the park", "the river"]
    got = rag.answer_logprobs(model, tok, prompts, choices, batch_size=4)  # padded batches
    the = tok(" the", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"] + the])
            logp = model(input_ids=ids).logits[0, -1].double().log_softmax(-1)
            for j, c in enumerate(choices):
                first = tok(f" {c}.", add_special_tokens=False)["input_ids"][len(the)]
                assert abs(got[i, j].item() - logp[first].item()) < 1e-4, (i, c, got[i, j].item(), logp[first].item())


def test_choices_that_cannot_be_told_apart_by_one_token_are_refused(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="choices must differ"):
        rag.choice_tokens(tok, ["the lake", "the lake"])
    with pytest.raises(ValueError, match="passages must be"):
        rag.BM25([])
    with pytest.raises(ValueError, match="seed must be"):
        rag.make_world(-1)
