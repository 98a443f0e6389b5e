"""Test-set contamination: word n-gram overlap between evaluation items and training text.

GPT-3 flagged a benchmark item when any of its N-grams occurred in the training data, N set per benchmark between 8
and 13 words, and compared items shorter than N whole (Brown et al. 2020, arXiv:2005.14165, section 4 and appendix C);
later reports use other n or token spans. The choice of n and of the rule (any n-gram seen, or all of them) decides
what can be seen: items shorter than n have no n-gram, and short n-grams match the shared template of every item.

    index = ngram_index(train_texts, 8)
    ratios = overlap_ratios(test_texts, index, 8)   # per item: share of its 8-grams seen in training (None: too short)
    flag_rates(ratios, leaked, "any")                # detected / false alarms / too short, when leaks are known
"""

from __future__ import annotations

from typing import Sequence

from ..checks import check_choice, check_int, check_items


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The n-grams of the whitespace-separated, lower-cased words of `text` ([] when it has fewer than n words)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    check_int("n", n)
    words = text.lower().split()
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def ngram_index(texts: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Every word n-gram of the training texts."""
    check_items("texts", texts, str, "strings")
    return {g for t in texts for g in word_ngrams(t, n)}


def overlap_ratios(texts: Sequence[str], index: set, n: int) -> list[float | None]:
    """Per text: the share of its word n-grams found in `index` (ngram_index of the training texts with the same n);
    None for a text shorter than n words, which no n-gram check can flag."""
    check_items("texts", texts, str, "strings")
    out = []
    for t in texts:
        grams = word_ngrams(t, n)
        out.append(sum(g in index for g in grams) / len(grams) if grams else None)
    return out


RULES = {"any": lambda r: r > 0, "all": lambda r: r == 1}  # flag when any / all of an item's n-grams were seen


def flag_rates(ratios: Sequence[float | None], leaked: Sequence[bool], rule: str = "all") -> dict[str, float]:
    """How a flag (RULES[rule] on the overlap ratio) sorts items whose leak status is known: {"detected": share of
    leaked items flagged, "false_alarms": share of clean items flagged, "too_short": share of items with no n-gram}."""
    check_choice("rule", rule, list(RULES))
    if len(ratios) != len(leaked) or not ratios:
        raise ValueError(f"ratios and leaked must be non-empty and of the same length, got {len(ratios)} and {len(leaked)}")
    flagged = [r is not None and RULES[rule](r) for r in ratios]
    n_leaked, n_clean = sum(map(bool, leaked)), len(leaked) - sum(map(bool, leaked))
    if not n_leaked or not n_clean:
        raise ValueError("leaked must mark some items True (leaked) and some False (clean)")
    return {"detected": sum(f for f, x in zip(flagged, leaked) if x) / n_leaked,
            "false_alarms": sum(f for f, x in zip(flagged, leaked) if not x) / n_clean,
            "too_short": sum(r is None for r in ratios) / len(ratios)}
