"""Stored notebook outputs: execute in the cpu profile, and tag the cells whose output does not depend on the profile.

    python tests/notebook_outputs.py execute NOTEBOOK...   (what `make execute` runs)

For each notebook: run it top to bottom in the `cpu` profile and store its outputs (and, through
`course_utils.book`, its key numbers in notebooks/book/); run a copy in the `ci` profile; tag `nbval-check-output`
on the cells whose sanitized outputs are the same in both runs (parity differences, counts, exact formulas), so that
`make test` (nbval in lax mode, ci profile) compares exactly those; print the minutes each cpu run took.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHECK_TAG = "nbval-check-output"
MEASUREMENT_TAG = "nbval-ignore-output"  # set by hand on cells that measure this machine (timings, speed-ups)
CPU_ENV = {"COURSE_PROFILE": "cpu", "COURSE_WRITE_BOOK": "1"}
CI_ENV = {"COURSE_PROFILE": "ci", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sanitizers() -> list[tuple[re.Pattern, str]]:
    """The regex replacements of tests/sanitize.cfg (timings, addresses, widget ids), as nbval applies them."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def comparable(cell: dict, subs: list[tuple[re.Pattern, str]]) -> list:
    """A code cell's outputs as nbval compares them: text and data except images and widget ids, sanitized.

    Consecutive writes to the same stream are joined, as nbval does: how the kernel splits them varies between runs.
    """
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            text = o["text"] if isinstance(o["text"], str) else "".join(o["text"])
            if out and out[-1][:2] == ("stream", o["name"]):
                text = out.pop()[2] + text
            out.append(("stream", o["name"], text))
        elif o["output_type"] in ("execute_result", "display_data"):
            for mime, v in sorted(o.get("data", {}).items()):
                if mime.startswith("image/") or mime == "application/vnd.jupyter.widget-view+json":
                    continue
                out.append((mime, v if isinstance(v, str) else "".join(v)))
        else:
            out.append((o["output_type"], o.get("ename", "")))
    flat = json.dumps(out)
    for pattern, replacement in subs:
        flat = pattern.sub(replacement, flat)
    return json.loads(flat)


def run(path: Path, env: dict[str, str], out: Path) -> float:
    """Execute `path` into `out` with nbconvert under `env`; return the seconds it took."""
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.timeout=1800", f"--output={out.resolve()}", str(path.resolve())],
                   env={**os.environ, **env}, check=True, cwd=path.parent)
    return time.time() - t0


def tag_profile_independent(stored: dict, ci_run: dict) -> int:
    """Tag `nbval-check-output` on code cells with the same sanitized output in both runs; return how many.

    Cells tagged `nbval-ignore-output` (measurements of the machine) keep that tag and are never compared.
    """
    subs, n = sanitizers(), 0
    for cell, other in zip(stored["cells"], ci_run["cells"]):
        if cell["cell_type"] != "code":
            continue
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != CHECK_TAG]
        if (MEASUREMENT_TAG not in tags and cell.get("outputs")
                and comparable(cell, subs) == comparable(other, subs)):
            tags.append(CHECK_TAG)
            n += 1
        if tags:
            cell.setdefault("metadata", {})["tags"] = tags
        else:
            cell.get("metadata", {}).pop("tags", None)
    return n


def execute(paths: list[Path]) -> None:
    for path in paths:
        seconds = run(path, CPU_ENV, path)
        with tempfile.TemporaryDirectory() as tmp:
            ci_path = Path(tmp) / path.name
            ci_seconds = run(path, CI_ENV, ci_path)
            stored, ci_run = nbformat.read(path, as_version=4), nbformat.read(ci_path, as_version=4)
        n = tag_profile_independent(stored, ci_run)
        nbformat.write(stored, path)
        book = ROOT / "notebooks" / "book" / f"{path.stem}.json"
        if book.exists():
            entry = json.loads(book.read_text())
            entry["cpu_minutes"] = round(seconds / 60, 1)
            book.write_text(json.dumps(entry, indent=1) + "\n")
        print(f"{path}: cpu profile {seconds / 60:.1f} min, ci profile {ci_seconds / 60:.1f} min; "
              f"{n} cells compared in the ci profile", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "execute":
        sys.exit(__doc__)
    execute([Path(p).resolve() for p in sys.argv[2:]])
