"""How every exercise check runs: call the student's function, compare with a reference, print one verdict."""

from __future__ import annotations

from typing import Callable

import torch


def run_check(title: str, trial: Callable[[], str | None]) -> None:
    """Run `trial()` (returns None when correct, else what went wrong) and print the verdict (PASS, TODO or FAIL).

    Returns nothing, so a notebook cell that calls a check shows only the printed verdict.

    A stub that raises NotImplementedError or returns None (`...`) reads as "not implemented yet".
    """
    try:
        problem = trial()
    except (NotImplementedError, _StubReturnedNone):
        problem = "not implemented yet"
    except Exception as exc:  # a student's bug must be reported, not crash the notebook
        problem = f"your function raised {type(exc).__name__}: {exc}"
    if problem is None:
        print(f"PASS {title}")
    elif problem == "not implemented yet":
        print(f"TODO {title}: {problem}  (fill in the function above, then run this cell again)")
    else:
        print(f"FAIL {title}: {problem}")


class _StubReturnedNone(Exception):
    pass


def call(fn: Callable, *args, **kwargs):
    """Call a student's function; a stub returning None is treated as not implemented."""
    out = fn(*args, **kwargs)
    if out is None:
        raise _StubReturnedNone
    return out


def compare(name: str, got, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> str | None:
    """None when `got` matches `expected` (shape and values), else a message with the max difference."""
    if not isinstance(got, torch.Tensor):
        return f"{name} should be a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    diff = (got.double() - expected.double()).abs()
    if not torch.all(diff <= atol + rtol * expected.double().abs()):
        return f"{name} differs from the reference: max_diff {diff.max().item():.3g}"
    return None
