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
