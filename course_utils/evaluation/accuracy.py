"""Exact match per task family: 0/1 results grouped by family, each family's majority-answer baseline, and the
accuracy table the SFT and DPO labs print (n, baseline, then each run's accuracy with its 95 % Wilson interval);
pass@k from n samples (Chen et al. 2021).

    print(accuracy_table(tasks, {"before": before, "after": after}))  # EvalResult or evaluate_replies outputs
"""

from __future__ import annotations

from typing import Sequence

import math

from ..checks import check_int, check_items
from ..data import TASK_FAMILIES, Task
from ..stats import binomial_ci, majority_baseline


def correct_by_family(tasks: list[Task], correct: Sequence) -> dict[str, list[bool]]:
    """0/1 per task grouped by family (families in TASK_FAMILIES order), e.g. for stats.check_gain per family."""
    check_items("tasks", tasks, Task, "data.Task")
    if len(correct) != len(tasks):
        raise ValueError(f"correct must have one entry per task: {len(correct)} for {len(tasks)} tasks")
    out = {f: [bool(c) for t, c in zip(tasks, correct) if t.family == f] for f in TASK_FAMILIES}
    return {f: v for f, v in out.items() if v}


def family_accuracy(tasks: list[Task], correct: Sequence) -> dict[str, float]:
    """Exact-match rate per family present in `tasks` (TASK_FAMILIES order)."""
    return {f: sum(v) / len(v) for f, v in correct_by_family(tasks, correct).items()}


def distinct_tasks(tasks: list[Task]) -> list[Task]:
    """`tasks` without repeated prompts (the first of each kept, order kept). Greedy decoding answers a repeated
    prompt the same way every time, so repeats add no information but shrink the error bars they are counted in."""
    check_items("tasks", tasks, Task, "data.Task")
    seen: set[str] = set()
    return [t for t in tasks if not (t.prompt in seen or seen.add(t.prompt))]


def majority_baselines(tasks: list[Task]) -> dict[str, tuple[str, float]]:
    """Per family: the most common answer among `tasks` and the accuracy of always giving it."""
    check_items("tasks", tasks, Task, "data.Task")
    fams = [f for f in TASK_FAMILIES if any(t.family == f for t in tasks)]
    return {f: majority_baseline([t.answer for t in tasks if t.family == f]) for f in fams}


def _correct_list(name: str, result, n: int) -> Sequence:
    """The 0/1 list of an evaluate_replies output (its "correct") or an sft.EvalResult (.correct), of length n."""
    correct = result.get("correct") if isinstance(result, dict) else getattr(result, "correct", None)
    if correct is None or len(correct) != n:
        got = "no 'correct' list" if correct is None else f"its 'correct' list has {len(correct)}"
        raise ValueError(f"results[{name!r}] must be an evaluate_replies output on these {n} tasks "
                         f"(or an sft.EvalResult; {got})")
    return correct


def accuracy_table(tasks: list[Task], results: dict, *, digits: int = 2, width: int = 18, answers: bool = True,
                   total: str = "overall") -> str:
    """Per family: n, the majority-answer baseline, then each run's accuracy with its 95 % (Wilson) interval.

    results: {column name: sft.EvalResult or dpo.evaluate_replies output on exactly `tasks`}. With more than one
    family a last row `total` adds them up (its baseline: each family's rate weighted by its share of the tasks).
    answers: show each family's majority answer next to its rate; digits: decimals of the accuracies;
    width: the smallest column width. The defaults are the SFT lab's layout, dpo.accuracy_table's is
    digits=3, width=21, answers=False, total="all".
    """
    check_items("tasks", tasks, Task, "data.Task")
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {column name: EvalResult or evaluate_replies output}")
    groups = {name: correct_by_family(tasks, _correct_list(name, res, len(tasks))) for name, res in results.items()}
    base = majority_baselines(tasks)
    sizes = {f: sum(t.family == f for t in tasks) for f in base}
    width = max(width, *(len(name) for name in results))
    majority = f"{'majority answer':>16s}" if answers else f"{'majority':>8s}"
    lines = [f"{'family':9s} {'n':>4s} {majority}  " + "  ".join(f"{name:>{width}s}" for name in results)]
    for f in [*base, *([total] if len(base) > 1 else [])]:
        n = len(tasks) if f == total else sizes[f]
        rate = sum(base[g][1] * sizes[g] for g in base) / n if f == total else base[f][1]
        answer = "" if f == total else base[f][0] if len(base[f][0]) <= 7 else base[f][0][:6] + "…"
        cells = []
        for by_family in groups.values():
            k = sum(sum(v) for v in by_family.values()) if f == total else sum(by_family[f])
            low, high = binomial_ci(k, n)
            cells.append(f"{k / n:.{digits}f} [{low:.2f}, {high:.2f}]".rjust(width))
        maj = f"{answer:>8s} {rate:7.3f}" if answers else f"{rate:8.3f}"
        lines.append(f"{f:9s} {n:4d} {maj}  " + "  ".join(cells))
    return "\n".join(lines)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, arXiv:2107.03374, Eq. 1).

    The chance that k samples drawn *without replacement* from the n contain a correct one: 1 - C(n-c, k) / C(n, k)
    (1.0 when n - c < k). Python's exact integers keep it exact for any n.
    """
    check_int("n", n)
    check_int("c", c, 0, n, allowed=f"an int in [0, n = {n}]")
    check_int("k", k, 1, n, allowed=f"an int in [1, n = {n}]")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
