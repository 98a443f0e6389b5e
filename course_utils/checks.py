"""Argument checks every module uses. A bad argument raises an error whose message names the argument, the value it
got and what is allowed:

    check_int("top_k", -1, 0)                             # ValueError: top_k must be a non-negative int, got -1
    check_number("top_p", 1.5, 0.0, 1.0, low_open=True)   # ValueError: top_p must be in (0.0, 1.0], got 1.5
    check_int("n", 2.5)                                   # ArgumentTypeError: n must be a positive int, got float 2.5

`allowed` rewords what is allowed (e.g. "an int >= 2 (a pair needs two samples)", or just ">= 1"); a wrong type
says the type too ("an int >= 1") when `allowed` starts with neither "a", "an" nor "None".
"""

from __future__ import annotations

import math
from typing import Any, Collection

import torch


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Also a ValueError: before the modules shared these checks, some raised
    TypeError and some ValueError for a wrong type, so callers catching either keep working."""


def _with_type(type_words: str, allowed: str) -> str:
    """'>= 1' -> 'an int >= 1'; 'a positive int' stays."""
    return allowed if allowed.startswith(("a ", "an ", "None")) else f"{type_words} {allowed}"


def check_int(name: str, value, low: int = 1, high: int | None = None, *, allowed: str | None = None) -> int:
    """`value` when it is an int (not a bool) in [low, high] (high None: no upper bound).

    allowed defaults to "a positive int" (low 1), "a non-negative int" (low 0), "an int >= low" or "an int in
    [low, high]".
    """
    if allowed is None:
        allowed = (f"an int in [{low}, {high}]" if high is not None else
                   {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}"))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be {_with_type('an int', allowed)}, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_number(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, finite: bool = False, allowed: str | None = None) -> float:
    """float(value) when it is an int or float (not a bool), not NaN, between low and high (None: unbounded;
    *_open: that end excluded) and, with finite=True, not ±inf.

    allowed defaults to the interval when both ends are given ("in (0.0, 1.0]"), else "a number > 0",
    "a finite number >= 0", ...
    """
    if allowed is None and low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif allowed is None:
        bound = (f" {'>' if low_open else '>='} {low}" if low is not None else
                 f" {'<' if high_open else '<='} {high}" if high is not None else "")
        allowed = f"a {'finite ' if finite else ''}number{bound}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be {_with_type('a number', allowed)}, got {type(value).__name__} {value!r}")
    ok = not math.isnan(value) and not (finite and math.isinf(value))
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_tensor(name: str, x, *, dims: int | None = None, min_dim: int = 0, floating: bool = False) -> torch.Tensor:
    """`x` when it is a torch.Tensor with exactly `dims` (or at least `min_dim`) dims, floating-point if asked."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None and x.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims, got shape {tuple(x.shape)}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ArgumentTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_choice(name: str, value, choices: Collection) -> Any:
    """`value` when it is one of `choices` (shown in the message as given: pass a list or tuple)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_items(name: str, items, item_type: type, what: str | None = None):
    """`items` when it is a non-empty sequence of `item_type` (`what` names the type in the message)."""
    if not items or not all(isinstance(i, item_type) for i in items):
        got = repr(items) if not items else \
            f"an item of type {next(type(i).__name__ for i in items if not isinstance(i, item_type))}"
        raise ValueError(f"{name} must be a non-empty list of {what or item_type.__name__}, got {got}")
    return items
