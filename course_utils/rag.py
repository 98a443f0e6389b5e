"""Retrieval-augmented generation (lecture 13): facts the model never saw, two retrievers and a reader.

A *world* gives each of the course's 16 names one random value per relation ("Tom lives near the lake."), so no
model can know it from pretraining. A retriever (BM25 or MiniLM embeddings) finds passages for a question; the reader
(course-tiny, briefly fine-tuned to answer from passages) scores every allowed answer after them (Lewis et al. 2020,
arXiv:2005.11401).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .checks import check_int, check_items, check_number
from .data import ANIMALS, NAMES, OBJECTS, PLACES
from .train import TrainConfig, TrainResult, train

# relation: (passage template, question template, the answers allowed). "home" and "born" share their answers, so a
# passage about the other one is a distractor a reader must tell apart by its relation, not by its kind of answer.
RELATIONS: dict[str, tuple[str, str, list[str]]] = {
    "home": ("{name} lives near {value}.", "Where does {name} live?", PLACES),
    "born": ("{name} was born near {value}.", "Where was {name} born?", PLACES),
    "pet": ("{name} has a pet {value}.", "What pet does {name} have?", ANIMALS),
    "keeps": ("{name} keeps a {value} at home.", "What does {name} keep at home?", OBJECTS),
}


@dataclass(frozen=True)
class Fact:
    """One fact of a world: Fact("Tom", "home", "the lake")."""

    name: str
    relation: str
    value: str

    @property
    def passage(self) -> str:
        return RELATIONS[self.relation][0].format(name=self.name, value=self.value)

    @property
    def question(self) -> str:
        return RELATIONS[self.relation][1].format(name=self.name)

    @property
    def choices(self) -> list[str]:
        return RELATIONS[self.relation][2]


def make_world(seed: int) -> list[Fact]:
    """A random world: every name in data.NAMES gets one value per relation (home and born differ), 64 facts."""
    check_int("seed", seed, 0)
    rng = random.Random(seed)
    facts = []
    for name in NAMES:
        home, born = rng.sample(PLACES, 2)
        values = {"home": home, "born": born, "pet": rng.choice(ANIMALS), "keeps": rng.choice(OBJECTS)}
        facts += [Fact(name, rel, values[rel]) for rel in RELATIONS]
    return facts


# ---- retrievers --------------------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    """Lower-case word tokens: 'Where does Tom live?' -> ['where', 'does', 'tom', 'live']."""
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25 over word tokens (Robertson & Zaragoza 2009), idf as in rank_bm25's BM25Okapi.

    score(q, d) = sum over query words w of idf(w) * f(w, d) (k1 + 1) / (f(w, d) + k1 (1 - b + b |d| / avgdl)),
    idf(w) = log((N - n(w) + 0.5) / (n(w) + 0.5)); a negative idf is replaced by epsilon * (mean idf).
    """

    def __init__(self, passages: Sequence[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        check_items("passages", list(passages), str)
        self.k1, self.b = check_number("k1", k1, 0), check_number("b", b, 0, 1)
        self.passages = list(passages)
        self.docs = [Counter(words(p)) for p in self.passages]
        self.lengths = torch.tensor([sum(d.values()) for d in self.docs], dtype=torch.float64)
        n_docs = len(self.docs)
        df = Counter(w for d in self.docs for w in d)
        idf = {w: math.log((n_docs - n + 0.5) / (n + 0.5)) for w, n in df.items()}
        floor = check_number("epsilon", epsilon, 0) * sum(idf.values()) / len(idf)
        self.idf = {w: (v if v >= 0 else floor) for w, v in idf.items()}

    def scores(self, query: str) -> torch.Tensor:
        """(n_passages,) float64 BM25 score of every passage for `query`."""
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.lengths.mean())  # (N,)
        out = torch.zeros(len(self.docs), dtype=torch.float64)
        for w in words(query):
            f = torch.tensor([d[w] for d in self.docs], dtype=torch.float64)  # (N,) term counts
            out += self.idf.get(w, 0.0) * f * (self.k1 + 1) / (f + norm)
        return out


class DenseRetriever:
    """Cosine similarity of mean-pooled, L2-normalized sentence embeddings (MiniLM: all-MiniLM-L6-v2, 384 dims)."""

    def __init__(self, passages: Sequence[str], encoder, tokenizer, batch_size: int = 128):
        check_items("passages", list(passages), str)
        self.encoder, self.tokenizer, self.batch_size = encoder, tokenizer, batch_size
        self.passages = list(passages)
        self.embeddings = self.embed(self.passages)  # (N, 384)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) unit vectors: the mean of the last hidden states over real tokens."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, return_tensors="pt")
            hidden = self.encoder(**batch).last_hidden_state  # (B, T, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    def scores(self, query: str) -> torch.Tensor:
        """(n_passages,) cosine similarity of every passage to `query`."""
        return self.embed([query])[0] @ self.embeddings.T


def retrieve(retriever, query: str, k: int) -> tuple[list[int], list[float]]:
    """The indices and scores of the `k` best passages, best first."""
    scores = retriever.scores(query)
    check_int("k", k, 1, len(scores))
    top = torch.topk(scores, k)
    return top.indices.tolist(), top.values.tolist()


def rerank(first, second, query: str, k_first: int) -> list[int]:
    """Two stages: `first` retrieves k_first passages, `second` (scoring the same passages) orders them, best first."""
    idx, _ = retrieve(first, query, k_first)
    scores = second.scores(query)[idx]
    return [idx[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]


def recall_at_k(rankings: Sequence[Sequence[int]], gold: Sequence[int], k: int) -> list[bool]:
    """Per question: is its gold passage among the first k retrieved?"""
    return [g in r[:k] for r, g in zip(rankings, gold)]


# ---- the reader -------------------------------------------------------------------------------------------

def reader_prompt(passages: Sequence[str], question: str) -> str:
    """'<passages> Question: <question> Answer:' -- the prose question format course-tiny saw in pretraining."""
    return " ".join([*passages, f"Question: {question} Answer:"])


def choice_tokens(tokenizer, choices: Sequence[str]) -> tuple[list[int], list[int]]:
    """The token ids all choices share at the start, and each choice's first token after them (distinct).

    [' the lake.', ' the park.'] -> ([id(' the')], [id(' lake'), id(' park')]).
    """
    ids = [tokenizer(f" {c}.", add_special_tokens=False)["input_ids"] for c in check_items("choices", list(choices), str)]
    n = 0
    while all(len(i) > n + 1 for i in ids) and len({i[n] for i in ids}) == 1:
        n += 1
    firsts = [i[n] for i in ids]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"choices must differ in their first token after a shared prefix, got {list(choices)!r}")
    return ids[0][:n], firsts


@torch.no_grad()
def answer_logprobs(model, tokenizer, prompts: Sequence[str], choices: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(len(prompts), len(choices)) log P(choice's first own token | prompt + the choices' shared prefix).

    One forward pass per prompt: the choices share their first tokens (' the') and then differ in one token, so
    ranking that token ranks the choices (the rest, '.', is the same for all).
    """
    check_items("prompts", list(prompts), str)
    shared, firsts = choice_tokens(tokenizer, choices)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] + shared for p in prompts[start:start + batch_size]]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs], device=dev)  # (b, L)
        last = torch.tensor([len(s) - 1 for s in seqs], device=dev)  # right padding comes after: never attended to
        logits = model(input_ids=ids).logits[torch.arange(len(seqs), device=dev), last].float()  # (b, V)
        out.append(logits.log_softmax(-1)[:, firsts].cpu())  # (b, n_choices)
    return torch.cat(out)


def reader_accuracy(model, tokenizer, facts: Sequence[Fact], contexts: Sequence[Sequence[str]]) -> list[bool]:
    """Per fact: does the reader, given its context passages, score the right value above every other choice?"""
    correct = []
    for relation in RELATIONS:  # one batch of prompts per relation: they share their choices
        idx = [i for i, f in enumerate(facts) if f.relation == relation]
        if not idx:
            continue
        choices = RELATIONS[relation][2]
        prompts = [reader_prompt(contexts[i], facts[i].question) for i in idx]
        best = answer_logprobs(model, tokenizer, prompts, choices).argmax(-1)
        correct += [(i, choices[b] == facts[i].value) for i, b in zip(idx, best.tolist())]
    return [ok for _, ok in sorted(correct)]


def training_context(fact: Fact, world: Sequence[Fact], rng: random.Random, max_passages: int = 4) -> list[str]:
    """The fact's passage among 0..max_passages-1 others of its world, shuffled: mostly the passages a retriever
    confuses with it (the same name's other facts, other names' facts of the same relation), some at random."""
    near = [f.passage for f in world if f != fact and (f.name == fact.name or f.relation == fact.relation)]
    anywhere = [f.passage for f in world if f != fact]
    others = []
    for _ in range(rng.randint(0, max_passages - 1)):
        pool = [p for p in (near if rng.random() < 0.75 else anywhere) if p not in others]
        others.append(rng.choice(pool))
    passages = others + [fact.passage]
    rng.shuffle(passages)
    return passages


def hard_distractors(fact: Fact, world: Sequence[Fact], rng: random.Random) -> list[str]:
    """The fact's passage with the two hardest distractors, shuffled: the same name's other place fact (or another
    fact of that name) and another name's fact of the same relation."""
    twin = {"home": "born", "born": "home"}.get(fact.relation)
    same_name = [f for f in world if f.name == fact.name and f != fact and (twin is None or f.relation == twin)]
    same_relation = [f for f in world if f.relation == fact.relation and f.name != fact.name]
    passages = [fact.passage, rng.choice(same_name).passage, rng.choice(same_relation).passage]
    rng.shuffle(passages)
    return passages


def train_reader(model, tokenizer, *, steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                 checkpoint_dir=None) -> TrainResult:
    """Fine-tune `model` to answer from passages: fresh worlds (seeds 10_000+) each step, loss on the answer only.

    Every example holds its fact's passage (as RAG's reader is trained with retrieved passages that contain it), so
    it learns to read; the evaluation worlds (seeds below 10_000) are never seen.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    rng = random.Random(seed)
    dev = next(model.parameters()).device

    def batch(step: int) -> dict[str, torch.Tensor]:
        world = make_world(10_000 + seed * 100_000 + step)
        rows = []
        for fact in rng.sample(world, batch_size):
            prompt = tokenizer(reader_prompt(training_context(fact, world, rng), fact.question),
                               add_special_tokens=False)["input_ids"]
            answer = tokenizer(f" {fact.value}.", add_special_tokens=False)["input_ids"]
            rows.append((prompt + answer, [-100] * len(prompt) + answer))
        width = max(len(r[0]) for r in rows)
        ids = torch.tensor([r[0] + [tokenizer.pad_token_id] * (width - len(r[0])) for r in rows], device=dev)
        labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows], device=dev)
        return {"input_ids": ids, "labels": labels}

    def loss_fn(model, b):
        return model(input_ids=b["input_ids"], labels=b["labels"]).loss

    cfg = TrainConfig(steps=steps, lr=lr, warmup=max(1, steps // 10), seed=seed, checkpoint_dir=checkpoint_dir,
                      save_every=steps if checkpoint_dir else 0, keep_last=1)
    model.train()
    result = train(model, loss_fn, batch, cfg, resume=checkpoint_dir is not None)
    model.eval()
    return result


def rag_answer(reader, tokenizer, retriever, question: str, choices: Sequence[str], k: int) -> dict:
    """The whole pipeline for one question: the k passages `retriever` ranks first (with their scores), then the
    reader's probability of each choice (its scores renormalized over the choices): {passages, scores, probs}."""
    idx, scores = retrieve(retriever, question, k)
    passages = [retriever.passages[i] for i in idx]
    logp = answer_logprobs(reader, tokenizer, [reader_prompt(passages, question)], choices)[0]  # (n_choices,)
    return {"passages": passages, "scores": scores, "probs": logp.softmax(-1)}
