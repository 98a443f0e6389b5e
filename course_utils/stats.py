"""Error bars for the lesson checks: binomial intervals, paired comparisons, seeds' spread, and eval-size planning.

A notebook that says "GRPO raised accuracy" follows it with a check cell that calls `check_gain`: it prints both
accuracies with 95 % intervals and the gain with its standard error, and asserts the gain is at least `min_z`
standard errors, except in the `ci` profile, whose sizes are too small to show an effect (it only checks the numbers
are sane there and says so).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from . import book
from .checks import check_int, check_number
from .env import profile


def _z(level: float) -> float:
    """Two-sided normal quantile: 1.96 for level 0.95."""
    check_number("level", level, 0, 1, low_open=True, high_open=True)
    return NormalDist().inv_cdf(0.5 + level / 2)


def binomial_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (better than p ± 2 SE near 0 and 1).

    >>> [round(x, 3) for x in binomial_ci(8, 10)]
    [0.49, 0.943]
    """
    check_int("n", n)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes!r}")
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n independent problems: sqrt(p (1 - p) / n)."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    check_int("n", n)
    return math.sqrt(p * (1 - p) / n)


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) with its standard error, 95 % interval and z = diff / se."""

    diff: float
    se: float
    low: float
    high: float

    @property
    def z(self) -> float:
        return self.diff / self.se if self.se > 0 else (math.inf if self.diff > 0 else -math.inf if self.diff < 0 else 0.0)


def _as_floats(name: str, values: Sequence) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} must be a non-empty sequence of numbers")
    return values


def paired_difference(a: Sequence, b: Sequence, level: float = 0.95) -> Difference:
    """b - a on the same items (e.g. 0/1 correctness of two models on the same problems): SE of the mean of b_i - a_i.

    Pairing removes the problems both models get right or wrong, so it needs fewer problems than two separate
    binomial errors would.
    """
    a, b = _as_floats("a", a), _as_floats("b", b)
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length (paired items), got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    se, z = sd / math.sqrt(n), _z(level)
    return Difference(mean, se, mean - z * se, mean + z * se)


def unpaired_difference(a: Sequence, b: Sequence, level: float = 0.95) -> Difference:
    """mean(b) - mean(a) for independent samples (different problems or seeds), Welch's standard error."""
    a, b = _as_floats("a", a), _as_floats("b", b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a and b need at least 2 values each for a spread, got {len(a)} and {len(b)}")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se, z = math.sqrt(va / len(a) + vb / len(b)), _z(level)
    return Difference(mb - ma, se, mb - ma - z * se, mb - ma + z * se)


def mean_sd(values: Sequence) -> tuple[float, float]:
    """Mean and sample standard deviation (e.g. of one number over several seeds)."""
    values = _as_floats("values", values)
    m = sum(values) / len(values)
    sd = math.sqrt(sum((x - m) ** 2 for x in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def seed_interval(values: Sequence, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, SE, half-width of the t interval) of a few per-seed values: with 3 seeds the 95 % interval is
    ±4.30 SE (Student's t with 2 degrees of freedom), not ±1.96 SE."""
    from scipy.stats import t as student_t

    values = _as_floats("values", values)
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 seeds for a spread, got {len(values)}")
    level = check_number("level", level, 0, 1, low_open=True, high_open=True)
    mean, sd = mean_sd(values)
    se = sd / math.sqrt(len(values))
    return mean, se, float(student_t.ppf(0.5 + level / 2, len(values) - 1)) * se


def _gain_variance(gain: float, p: float | None, discordance: float | None) -> float:
    """Variance of the per-problem gain: paired, discordance - gain^2; unpaired, p(1 - p) + (p + gain)(1 - p - gain)."""
    check_number("gain", gain, 0, 1, low_open=True)
    if (p is None) == (discordance is None):
        raise ValueError(f"give exactly one of p (unpaired) and discordance (paired), got p={p!r}, "
                         f"discordance={discordance!r}")
    if discordance is not None:
        check_number("discordance", discordance, gain, 1, allowed=f"a share in [gain = {gain}, 1]")
        return discordance - gain ** 2
    check_number("p", p, 0, 1 - gain, allowed=f"an accuracy in [0, 1 - gain = {1 - gain:.3g}]")
    return p * (1 - p) + (p + gain) * (1 - p - gain)


def problems_needed(gain: float, *, p: float | None = None, discordance: float | None = None, min_z: float = 2.0,
                    power: float = 0.8) -> int:
    """Problems per model so that a true accuracy gain shows as >= min_z standard errors with probability `power`.

    Paired (both models on the same problems; discordance = the share of problems where they disagree): the
    per-problem difference has variance discordance - gain^2. Unpaired (p = the weaker model's accuracy, each model
    on its own n problems): p(1 - p) + (p + gain)(1 - p - gain). Then n = (min_z + z_power)^2 variance / gain^2.
    """
    variance = _gain_variance(gain, p, discordance)
    check_number("min_z", min_z, 0, low_open=True)
    check_number("power", power, 0, 1, low_open=True, high_open=True)
    return max(1, math.ceil((min_z + NormalDist().inv_cdf(power)) ** 2 * variance / gain ** 2))


def detection_power(n: int, gain: float, *, p: float | None = None, discordance: float | None = None,
                    min_z: float = 2.0) -> float:
    """Chance that an evaluation of n problems per model shows a true gain as >= min_z standard errors (normal
    approximation): 1 - Phi(min_z - gain / SE), SE = sqrt(variance / n). The inverse of problems_needed."""
    se = gain_se(n, gain, p=p, discordance=discordance)
    check_number("min_z", min_z, 0, low_open=True)
    return 1.0 - NormalDist().cdf(min_z - gain / se) if se > 0 else 1.0


def gain_se(n: int, gain: float, *, p: float | None = None, discordance: float | None = None) -> float:
    """Standard error of a measured gain on n problems per model, paired or unpaired (see problems_needed)."""
    variance = _gain_variance(gain, p, discordance)
    check_int("n", n)
    return math.sqrt(variance / n)


def resampled_power(a: Sequence, b: Sequence, n: int, *, min_z: float = 2.0, draws: int = 2000, seed: int = 0) -> float:
    """Share of `draws` evaluations of n problems, resampled with replacement from the paired 0/1 lists a and b, in
    which b beats a by at least min_z paired standard errors (the check a notebook would run)."""
    import torch

    a, b = _as_floats("a", a), _as_floats("b", b)
    if len(a) != len(b):
        raise ValueError(f"a and b must have one entry per problem, got {len(a)} and {len(b)}")
    check_int("n", n, 2)
    check_int("draws", draws)
    diffs = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
    d = diffs[torch.randint(len(diffs), (draws, n), generator=torch.Generator().manual_seed(seed))]  # (draws, n)
    mean, se = d.mean(1), d.std(1) / math.sqrt(n)
    z = torch.where(se > 0, mean / se.clamp_min(1e-300), torch.where(mean > 0, math.inf, 0.0))
    return float((z >= min_z).double().mean())


def majority_baseline(answers: Sequence[str]) -> tuple[str, float]:
    """The most common answer and the accuracy of always giving it (the baseline every accuracy is shown against)."""
    if not answers:
        raise ValueError("answers must be a non-empty sequence")
    answer, k = Counter(answers).most_common(1)[0]
    return answer, k / len(answers)


def describe_accuracy(correct: Sequence, name: str = "accuracy") -> str:
    """'name 0.765 (153/200), 95% CI [0.702, 0.818]' from a list of 0/1 per problem."""
    correct = [bool(c) for c in correct]
    k, n = sum(correct), len(correct)
    if n == 0:
        raise ValueError("correct must be a non-empty sequence of 0/1 per problem")
    low, high = binomial_ci(k, n)
    return f"{name} {k / n:.3f} ({k}/{n}), 95% CI [{low:.3f}, {high:.3f}]"


def _verdict(d: Difference, min_z: float, what: str) -> bool:
    """Print the difference; assert it in the cpu/gpu profiles, say why not in ci. Returns whether it held."""
    held = d.z >= min_z
    print(f"  {what}: {d.diff:+.3f} ± {d.se:.3f} (SE), 95% CI [{d.low:+.3f}, {d.high:+.3f}], z = {d.z:.1f}")
    if profile().name == "ci":
        print(f"  (the ci profile is too small to show this effect; the cpu profile asserts z >= {min_z:g})")
        return held
    assert held, f"{what} is {d.z:.1f} standard errors, fewer than the {min_z:g} this check asks for"
    return held


def check_gain(before: Sequence, after: Sequence, *, names: tuple[str, str] = ("before", "after"),
               label: str = "accuracy", min_z: float = 2.0, key: str | None = None) -> Difference:
    """Lesson check: `after` beats `before` on the same problems (0/1 per problem) by at least `min_z` paired SEs.

    Prints both accuracies with 95 % intervals and the gain; asserts outside the ci profile. `key` records the
    two accuracies for the "compare with the book" cell.
    """
    if not isinstance(names, tuple) or len(names) != 2:
        raise ValueError(f"names must be a pair of strings, got {names!r}")
    d = paired_difference(before, after)
    print(f"{label}, {names[0]} vs {names[1]} (n = {len(before)}, the same problems):")
    for name, correct in zip(names, (before, after)):
        print("  " + describe_accuracy(correct, name))
        if key:
            _record_accuracy(f"{key}: {name}", correct)
    _verdict(d, min_z, f"gain of {names[1]} over {names[0]} (paired)")
    return d


def check_above(correct: Sequence, baseline: float, *, name: str = "model", baseline_name: str = "baseline",
                min_z: float = 2.0, key: str | None = None) -> Difference:
    """Lesson check: an accuracy (0/1 per problem) beats a fixed baseline rate (e.g. majority answer, chance)."""
    correct = [float(c) for c in correct]
    if not 0 <= baseline <= 1:
        raise ValueError(f"baseline must be in [0, 1], got {baseline!r}")
    n, p = len(correct), sum(correct) / max(len(correct), 1)
    print("  " + describe_accuracy(correct, name) + f"   vs {baseline_name} {baseline:.3f}")
    se = math.sqrt(max(p * (1 - p), baseline * (1 - baseline)) / n)  # the larger SE: no false certainty at p = 1
    d = Difference(p - baseline, se, p - baseline - _z(0.95) * se, p - baseline + _z(0.95) * se)
    if key:
        _record_accuracy(f"{key}: {name}", correct)
    _verdict(d, min_z, f"{name} minus {baseline_name}")
    return d


def check_seeds(a: Sequence, b: Sequence, *, names: tuple[str, str] = ("a", "b"), label: str = "value",
                min_z: float = 2.0, key: str | None = None) -> Difference:
    """Lesson check over seeds: mean(b) exceeds mean(a) by at least `min_z` Welch SEs (pass -x to test a drop)."""
    d = unpaired_difference(a, b)
    print(f"{label} over seeds:")
    for name, values in zip(names, (a, b)):
        m, sd = mean_sd(values)
        print(f"  {name}: {m:.4g} ± {sd:.2g} (mean ± sd over {len(values)} seeds)")
        if key:
            book.record(f"{key}: {name}", m, sd / math.sqrt(len(values)))
    _verdict(d, min_z, f"{names[1]} minus {names[0]}")
    return d


def _record_accuracy(key: str, correct: Sequence) -> None:
    n = len(correct)
    p = sum(map(float, correct)) / n
    book.record(key, p, binomial_se(p, n))
