"""Lecture 12 (evaluation) exercise checks: Cohen's kappa, the eval size a gain needs (checked by simulation),
word n-gram overlap."""

from __future__ import annotations

import math
import random
from statistics import NormalDist
from typing import Callable

import torch

from .runner import call, run_check


def check_cohen_kappa(cohen_kappa: Callable, trials: int = 5) -> None:
    """cohen_kappa(a, b) -> float: (p_o - p_e) / (1 - p_e) for two equal-length lists of labels."""
    def trial():
        rng = random.Random(1201)
        for t in range(trials):
            labels = ["A", "B", "tie"][:2 + t % 2]
            a = [rng.choice(labels) for _ in range(40)]
            b = [x if rng.random() < 0.6 else rng.choice(labels) for x in a]
            if t == trials - 1:  # a rater who almost always says "A": raw agreement is high, kappa is not
                a, b = ["A"] * 36 + ["B"] * 4, ["A"] * 38 + ["B"] * 2
            table = torch.zeros(len(labels), len(labels), dtype=torch.float64)  # confusion counts
            for x, y in zip(a, b):
                table[labels.index(x), labels.index(y)] += 1
            table /= table.sum()
            p_o, p_e = table.trace(), (table.sum(1) * table.sum(0)).sum()
            expected = float((p_o - p_e) / (1 - p_e))
            got = call(cohen_kappa, list(a), list(b))
            if not isinstance(got, (int, float)) or not math.isclose(float(got), expected, abs_tol=1e-9):
                hint = ": that is the raw agreement p_o; subtract the chance agreement p_e" if (
                    isinstance(got, (int, float)) and math.isclose(float(got), float(p_o), abs_tol=1e-9)) else ""
                return f"cohen_kappa on {len(a)} labels {sorted(set(a) | set(b))} gave {got!r}, expected {expected:.6f}{hint}"
        return None
    return run_check("Cohen's kappa", trial)


def _simulated_power(n: int, gain: float, discordance: float, min_z: float, draws: int, gen) -> float:
    """Share of simulated paired evals of n problems (difference +1 w.p. (disc + gain) / 2, -1 w.p. (disc - gain) / 2)
    whose gain is at least min_z paired SEs."""
    u = torch.rand(draws, n, generator=gen, dtype=torch.float64)
    d = (u < (discordance + gain) / 2).double() - ((u >= (discordance + gain) / 2) & (u < discordance)).double()
    mean, se = d.mean(1), d.std(1) / math.sqrt(n)
    return float((mean >= min_z * se).double().mean())


def check_problems_needed(problems_needed: Callable, draws: int = 3000) -> None:
    """problems_needed(gain, discordance, min_z=2.0, power=0.8) -> int: paired problems so that a true gain shows
    as >= min_z standard errors in a share `power` of evaluations. Checked by simulating evaluations at your n."""
    def trial():
        gen = torch.Generator().manual_seed(1202)
        for gain, disc, power in ((0.05, 0.12, 0.8), (0.10, 0.30, 0.9), (0.03, 0.08, 0.5)):
            n = call(problems_needed, gain, disc, min_z=2.0, power=power)
            if not isinstance(n, int) or n < 2:
                return f"problems_needed({gain}, {disc}) should return an int >= 2, got {n!r}"
            reached = _simulated_power(n, gain, disc, 2.0, draws, gen)
            mc_se = math.sqrt(power * (1 - power) / draws)
            if abs(reached - power) > 0.03 + 3 * mc_se:
                hint = ""
                z_only = math.ceil(4 * (disc - gain ** 2) / gain ** 2)
                if abs(n - z_only) <= 2:
                    hint = ": that n only reaches 2 SE half the time; add the power quantile, (2 + z_power)^2"
                elif abs(n - math.ceil(disc / gain ** 2 * (2 + NormalDist().inv_cdf(power)) ** 2)) <= 2:
                    hint = ": close; the variance of a +1/0/-1 difference is discordance - gain^2"
                return (f"with gain {gain}, discordance {disc} your n = {n} reached 2 SE in {reached:.3f} of "
                        f"{draws} simulated evals, not {power}{hint}")
        return None
    return run_check("problems needed for a paired gain (checked by simulation)", trial)


def check_ngram_overlap(ngram_overlap: Callable) -> None:
    """ngram_overlap(text, train_texts, n) -> float: the share of the lower-cased word n-grams of `text` that occur
    in any of `train_texts`; nan when `text` has fewer than n words."""
    def trial():
        rng = random.Random(1203)
        vocab = "the a word cat dog reverse sort what is of in".split()
        for n in (2, 3, 5):
            train = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9))) for _ in range(6)]
            text = " ".join(rng.choice(vocab).upper() if rng.random() < 0.2 else rng.choice(vocab) for _ in range(8))
            words = text.lower().split()
            grams = [" " + " ".join(words[i:i + n]) + " " for i in range(len(words) - n + 1)]
            padded = [" " + " ".join(t.lower().split()) + " " for t in train]
            expected = sum(any(g in p for p in padded) for g in grams) / len(grams)
            got = call(ngram_overlap, text, list(train), n)
            if not isinstance(got, (int, float)) or not math.isclose(float(got), expected, abs_tol=1e-9):
                return f"ngram_overlap({text!r}, ..., n={n}) gave {got!r}, expected {expected:.4f}"
        got = call(ngram_overlap, "two words", ["two words here"], 3)
        if not (isinstance(got, float) and math.isnan(got)):
            return f"ngram_overlap('two words', ..., n=3) gave {got!r}: a text with fewer than n words has no n-gram, return nan"
        return None
    return run_check("word n-gram overlap", trial)
