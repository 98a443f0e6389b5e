"""The repository keeps its own promises: pins agree, notebooks are stored executed, nothing unsafe."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*$", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_matches_constraints():
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    env_yml = (ROOT / "environment.yml").read_text()
    tested_python = next(l.split("==")[1] for l in constraints if l.startswith("# python=="))
    assert re.search(rf"^\s*-\s*python={re.escape(tested_python)}\s*$", env_yml, re.M), "python version differs"
    pinned, env_pins = _pins(constraints), _pins(env_yml.splitlines())
    assert env_pins, "environment.yml pins nothing"
    mismatched = {k: (v, pinned.get(k)) for k, v in env_pins.items() if pinned.get(k) != v}
    assert not mismatched, f"environment.yml vs constraints.txt: {mismatched}"
    assert "-c constraints.txt" in env_yml and "-e .[dev]" in env_yml


def test_torch_is_pinned_first_and_everywhere():
    constraints = [l for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert constraints[0] == "torch==2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    pip_calls = [l for l in makefile.splitlines() if "pip install" in l]
    assert pip_calls and all('"torch==2.13.0"' in l and "-c constraints.txt" in l for l in pip_calls)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_exercises_and_solutions(path):
    source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    assert "check_" in source, "each notebook ends with exercises checked by course_utils.exercises"
    solution = ROOT / "notebooks" / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solution.exists(), f"missing {solution.relative_to(ROOT)}"


def test_no_unsafe_loading_in_code():
    for path in list((ROOT / "course_utils").rglob("*.py")) + list((ROOT / "benchmarks").glob("*.py")) + NOTEBOOKS:
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        assert "import pickle" not in text, path


def test_course_tiny_checkpoint_is_small_safetensors():
    folder = ROOT / "data" / "course-tiny"
    assert (folder / "model.safetensors").stat().st_size < 10 * 2**20
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
