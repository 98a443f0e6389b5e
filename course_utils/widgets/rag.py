"""Lecture 13: rag_explorer, one question through the RAG pipeline (retriever -> passages with scores -> answer)."""

from __future__ import annotations

import ipywidgets as w

from .core import live_rows, say, show


def rag_explorer(reader, tokenizer, encoder, encoder_tokenizer, world_seed: int = 0):
    """Pick a person and a question about world `world_seed`, a retriever and k: the passages it retrieves with their
    scores, and the reader's probability of every allowed answer."""
    from .. import rag
    from ..checks import check_int
    from ..data import NAMES
    from ..plotting import plot_choice_probs

    world = rag.make_world(check_int("world_seed", world_seed, 0))
    passages = [f.passage for f in world]
    retrievers = {"BM25": rag.BM25(passages), "MiniLM": rag.DenseRetriever(passages, encoder, encoder_tokenizer)}
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="220px"))
    name = w.Dropdown(options=NAMES, value=NAMES[0], description="person", **wide)
    relation = w.Dropdown(options=[(rag.RELATIONS[r][1].format(name="…"), r) for r in rag.RELATIONS],
                          value="home", description="question", **wide)
    retriever = w.ToggleButtons(options=list(retrievers), value="MiniLM", description="retriever",
                                style={"description_width": "initial", "button_width": "80px"})
    k = w.IntSlider(value=1, min=1, max=5, description="passages (k)", **wide)

    def update():
        fact = next(f for f in world if f.name == name.value and f.relation == relation.value)
        result = rag.rag_answer(reader, tokenizer, retrievers[retriever.value], fact.question, fact.choices, k.value)
        say(f"question: {fact.question}")
        for passage, score in zip(result["passages"], result["scores"]):
            print(f"  {score:6.2f}  {passage}" + ("   <- holds the answer" if passage == fact.passage else ""))
        best = fact.choices[int(result["probs"].argmax())]
        say(f"answer: {best} ({'right' if best == fact.value else 'wrong'}; the true one is {fact.value})")
        fig, _ = plot_choice_probs(fact.choices, result["probs"], fact.value)
        show(fig)

    return live_rows(update, [[name, relation], [retriever, k]])
