"""Every exercise check can fail: a stub reads as TODO, a wrong answer as FAIL, and neither raises.

The PASS side is tested by the solutions notebooks (their check cells are compared with the stored 'PASS' lines).
"""

from __future__ import annotations

import inspect

import pytest
import torch

import course_utils as cu

CHECKS = sorted(name for name, fn in inspect.getmembers(cu.exercises, inspect.isfunction) if name.startswith("check_"))


def test_every_lecture_has_checks():
    assert len(CHECKS) >= 29, CHECKS


def _stub(*args, **kwargs):
    raise NotImplementedError


def _wrong(*args, **kwargs):
    return torch.full((1,), 7.0)  # the wrong type or shape for every exercise, never a right answer


def _raises(*args, **kwargs):
    raise ValueError("a student's bug")


@pytest.mark.parametrize("name", CHECKS)
@pytest.mark.parametrize("fn, verdict", [(_stub, "TODO"), (_wrong, "FAIL"), (_raises, "FAIL")])
def test_check_reports_unfinished_or_wrong_functions(name, fn, verdict, capsys):
    assert getattr(cu.exercises, name)(fn) is None
    out = capsys.readouterr().out.strip()
    assert out.startswith(verdict + " "), (name, out)
    if fn is _raises:
        assert "ValueError: a student's bug" in out, out
