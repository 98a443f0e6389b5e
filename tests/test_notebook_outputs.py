"""The tagging rule of `make execute`: outputs compared the way nbval compares them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_outputs import comparable, sanitizers, tag_profile_independent  # noqa: E402


def stream(*texts):
    return {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": t} for t in texts]}


def test_split_stream_writes_compare_equal_and_durations_are_sanitized():
    subs = sanitizers()
    assert comparable(stream("a = 1\n", "b = 2\n"), subs) == comparable(stream("a = 1\nb = 2\n"), subs)
    assert comparable(stream("took 3.2 s\n"), subs) == comparable(stream("took 10.8 min\n"), subs)
    assert comparable(stream("a = 1\n"), subs) != comparable(stream("a = 2\n"), subs)


def test_measurement_cells_are_never_tagged_for_comparison():
    measured = dict(stream("x\n"), metadata={"tags": ["nbval-ignore-output"]})
    same, different = stream("y\n"), stream("y\n")
    stored = {"cells": [measured, same, different]}
    ci_run = {"cells": [stream("x\n"), stream("y\n"), stream("z\n")]}
    assert tag_profile_independent(stored, ci_run) == 1
    assert measured["metadata"]["tags"] == ["nbval-ignore-output"]
    assert same["metadata"]["tags"] == ["nbval-check-output"] and "tags" not in different.get("metadata", {})


def test_round_off_below_1e_4_compares_equal_across_cpus_and_larger_differences_do_not():
    subs = sanitizers()
    assert comparable(stream("max diff 0.0e+00\n"), subs) == comparable(stream("max diff 3.0e-08\n"), subs)
    assert comparable(stream("norm 3.1e-10\n"), subs) == comparable(stream("norm 3.7e-10\n"), subs)
    assert comparable(stream("moved 2.0e-02\n"), subs) != comparable(stream("moved 3.0e-02\n"), subs)
    assert comparable(stream("moved 0.0e+00\n"), subs) != comparable(stream("moved 2.0e-02\n"), subs)
