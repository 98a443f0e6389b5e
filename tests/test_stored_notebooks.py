"""The stored notebooks are the textbook: executed top to bottom in the cpu profile, without errors, with book numbers."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOTEBOOKS = LECTURES + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
# "CI" alone may be a confidence interval; these phrases are about the test machinery.
CI_SPEAK = re.compile(r"nbval|not compared|\b(so|by|in|for|the) CI\b|\bCI (notices|runs|checks)\b")


def code_cells(path):
    """Non-empty code cells (Jupyter does not execute empty ones)."""
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def text(output) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    return "".join(output.get("data", {}).get("text/plain", ""))


def test_there_are_notebooks():
    assert len(LECTURES) >= 10 and len(NOTEBOOKS) == 2 * len(LECTURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_top_to_bottom_in_cpu_profile_without_errors(path):
    cells = code_cells(path)
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: cells not run once each, in order: {counts}"
    errors = [i for i, c in enumerate(cells) for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{path.name}: error outputs in code cells {errors}"
    assert "seed_everything" in "".join(cells[0]["source"]), f"{path.name}: seed once in the first code cell"
    first = "".join(text(o) for o in cells[0]["outputs"])
    assert "profile: cpu" in first, f"{path.name}: the first code cell must print 'profile: cpu', printed {first!r}"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_closes_with_the_book_comparison(path):
    book = ROOT / "notebooks" / "book" / f"{path.stem}.json"
    assert book.exists(), f"{book} missing: run `make execute NOTEBOOKS={path.relative_to(ROOT)}`"
    stored = json.loads(book.read_text())
    assert stored["profile"] == "cpu" and stored["metrics"], f"{book.name}: {stored.get('profile')}, no metrics?"
    assert f'compare_with_book("{path.stem}")' in "".join(code_cells(path)[-1]["source"]), \
        f"{path.name}: the last code cell must be cu.compare_with_book({path.stem!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_speaks_to_students(path):
    cells = json.loads(path.read_text())["cells"]
    prose = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    comments = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
                if line.lstrip().startswith("#")]
    found = [s for s in prose + comments if CI_SPEAK.search(s)]
    assert not found, f"{path.name}: talks about the test machinery instead of the lesson: {found[0][:200]!r}"


def test_readme_minutes_are_the_measured_ones():
    """The README's minutes column is what `make execute` measured (notebooks/book/NN.json)."""
    readme = (ROOT / "README.md").read_text()
    for path in LECTURES:
        minutes = json.loads((ROOT / "notebooks" / "book" / f"{path.stem}.json").read_text())["cpu_minutes"]
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{path.stem}` |"))
        cells = [c.strip() for c in row.strip().strip("|").split(" | ")]  # notebook, topic, what, minutes, GPU memory
        assert cells[3] == str(minutes), f"README's minutes column for {path.stem} says {cells[3]!r}, measured {minutes}"
        assert not cells[4].replace(".", "").isdigit(), f"README's GPU memory column for {path.stem} is a bare number"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_widgets_show_a_picture_without_a_kernel(path):
    """Every displayed widget is stored with a PNG of its default view, which a viewer without the live widget shows."""
    cells = code_cells(path)
    widgets = [o["data"] for c in cells for o in c["outputs"]
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if any("_explorer(" in "".join(c["source"]) for c in cells):
        assert widgets, f"{path.name}: builds a widget but stores no widget output"
    assert all("image/png" in data for data in widgets), f"{path.name}: a widget is stored without its picture"
