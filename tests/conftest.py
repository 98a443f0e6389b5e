"""Shared fixtures: the course model is loaded once per test process."""

import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "ci")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on a rented GPU: COURSE_PROFILE=gpu make test)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of course-tiny on CPU, float32, eval mode."""
    from course_utils import load_model

    return load_model("course-tiny", device="cpu")


def pytest_terminal_summary(terminalreporter):
    """One closing line per notebook with its total run time (setup + every cell), slowest first; after the browser
    test, its update times per widget and control."""
    import json
    from collections import defaultdict
    from pathlib import Path

    seconds = defaultdict(float)
    for reports in terminalreporter.stats.values():
        for rep in reports:
            path = getattr(rep, "nodeid", "").split("::")[0]
            if path.endswith(".ipynb"):
                seconds[path] += getattr(rep, "duration", 0.0)
    if seconds:
        terminalreporter.section("notebook run times")
        for path, total in sorted(seconds.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{total:7.1f} s  {path}")
        terminalreporter.write_line(f"{sum(seconds.values()):7.1f} s  all notebooks (summed over workers)")
    latency = Path(__file__).resolve().parents[1] / ".cache" / "browser" / "latency.json"
    ran = any("test_browser.py::test_widget_in_browser" in getattr(rep, "nodeid", "")
              for reports in terminalreporter.stats.values() for rep in reports)
    if ran and latency.exists():
        terminalreporter.section("widget update times in the browser (s; the aim is 0.3, * above it)")
        for widget, times in json.loads(latency.read_text()).items():
            terminalreporter.write_line(f"{widget}: " + "; ".join(
                f"{control} {seconds:.2f}{'*' if seconds > 0.3 else ''}" for control, seconds in times.items()))
