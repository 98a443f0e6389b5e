"""Exercise checks: `check_*(your_function)` tests a student's function on fresh random inputs.

Each check prints one friendly line and returns True (passed) or False (wrong or not implemented yet);
it never raises, so an unfilled stub does not stop the notebook.
"""

from __future__ import annotations

from typing import Callable

import torch


def run_check(title: str, trial: Callable[[], str | None]) -> bool:
    """Run `trial()` (returns None when correct, else what went wrong) and print the verdict.

    A stub that raises NotImplementedError or returns None (`...`) reads as "not implemented yet".
    """
    try:
        problem = trial()
    except NotImplementedError:
        problem = "not implemented yet"
    except _StubReturnedNone:
        problem = "not implemented yet"
    except Exception as exc:  # a student's bug must be reported, not crash the notebook
        problem = f"your function raised {type(exc).__name__}: {exc}"
    if problem is None:
        print(f"PASS {title}")
        return True
    hint = "  (fill in the function above, then run this cell again)" if problem == "not implemented yet" else ""
    print(f"{'TODO' if hint else 'FAIL'} {title}: {problem}{hint}")
    return False


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


# ---- 00 setup: the demo exercise ------------------------------------------------------------------

def check_softmax(softmax: Callable[[torch.Tensor], torch.Tensor], trials: int = 5) -> bool:
    """softmax(x) over the last dim, stable for large logits; compared with float64 torch.softmax."""
    def trial():
        gen = torch.Generator().manual_seed(1234)
        for t in range(trials):
            shape = (int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(2, 9, (1,), generator=gen)))
            x = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + 30 * t)  # later trials: huge logits
            problem = compare("softmax(x)", call(softmax, x.clone()), torch.softmax(x, dim=-1), atol=1e-6)
            if problem:
                return problem + f" (trial {t}, logits up to {x.abs().max().item():.0f})"
        return None
    return run_check("softmax", trial)


# ---- 01 attention checks (issue 3) ----

# ---- 02 norms checks (issue 4) ----

# ---- 03 positional checks (issue 4) ----

# ---- 04 moe checks (issue 5) ----

# ---- 05 decoding checks (issue 6) ----

# ---- 06 lora / memory checks (issue 7) ----

# ---- 07 sft checks (issue 8) ----
