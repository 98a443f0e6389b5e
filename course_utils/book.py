"""Compare with the book: your run's key numbers next to the stored notebook's, with the noise expected between them.

Lesson checks `record` their numbers (value and standard error) as they run. The last cell of a notebook calls
`compare_with_book("05_decoding")`: it prints a table of the book's value (the stored `cpu`-profile run, kept in
`notebooks/book/05_decoding.json`), yours, and whether they agree within two combined standard errors.
`make execute` sets COURSE_WRITE_BOOK=1, so the run that stores the outputs also stores the book's numbers.
"""

from __future__ import annotations

import json
import math
import os

from .env import REPO_ROOT, profile

BOOK_DIR = REPO_ROOT / "notebooks" / "book"
_live: dict[str, tuple[float, float | None]] = {}


def record(key: str, value: float, se: float | None = None) -> None:
    """Remember one key number of this run (se: its standard error; None for an exact, deterministic value)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"value for {key!r} must be finite, got {value!r}")
    if se is not None and not (math.isfinite(se) and se >= 0):
        raise ValueError(f"se for {key!r} must be a finite number >= 0 or None, got {se!r}")
    _live[key] = (value, None if se is None else float(se))


def _agree(book_value: float, book_se: float | None, value: float, se: float | None) -> tuple[bool, float]:
    """Agreement within 2 combined SEs (exact values: within 1e-6 relative). Returns (agrees, allowed difference)."""
    if book_se is None and se is None:
        allowed = 1e-6 * max(1.0, abs(book_value))
    else:
        allowed = 2 * math.hypot(book_se or 0.0, se or 0.0)
    return abs(value - book_value) <= allowed + 1e-12, allowed


def compare_with_book(notebook: str) -> dict:
    """Print the book's key numbers next to this run's; store them instead when COURSE_WRITE_BOOK=1 (make execute).

    Returns {key: {"book": ..., "yours": ..., "agrees": bool}} for the keys both runs have.
    """
    if not isinstance(notebook, str) or not notebook or "/" in notebook:
        raise ValueError(f"notebook must be a notebook name such as '05_decoding', got {notebook!r}")
    path = BOOK_DIR / f"{notebook}.json"
    run_profile = profile().name
    if os.environ.get("COURSE_WRITE_BOOK") == "1":
        BOOK_DIR.mkdir(parents=True, exist_ok=True)
        stored = {"profile": run_profile,
                  "metrics": {k: {"value": v, "se": se} for k, (v, se) in sorted(_live.items())}}
        path.write_text(json.dumps(stored, indent=1) + "\n")  # silent: the stored output must equal a re-run's
    if not path.exists():
        print(f"No book numbers for {notebook} yet (`make execute NOTEBOOKS=notebooks/{notebook}.ipynb` stores them).")
        return {}
    book = json.loads(path.read_text())
    if book["profile"] != run_profile:
        print(f"The book ran the {book['profile']} profile and you ran {run_profile}: sizes differ, so the numbers "
              f"are not expected to agree. Run with COURSE_PROFILE={book['profile']} to compare.")
    rows, width = {}, max([len(k) for k in book["metrics"]] + [10])
    print(f"{'key number':{width}s}  {'book':>16s}  {'yours':>16s}  agrees (within 2 SE)")
    for key, entry in book["metrics"].items():
        b, bse = entry["value"], entry["se"]
        fmt = lambda v, se: f"{v:.4g}" + ("" if se is None else f" ± {se:.2g}")
        if key not in _live:
            print(f"{key:{width}s}  {fmt(b, bse):>16s}  {'(not run)':>16s}")
            continue
        v, se = _live[key]
        agrees, _ = _agree(b, bse, v, se)
        rows[key] = {"book": b, "yours": v, "agrees": agrees}
        print(f"{key:{width}s}  {fmt(b, bse):>16s}  {fmt(v, se):>16s}  {'yes' if agrees else 'NO'}")
    if run_profile == book["profile"] and not all(r["agrees"] for r in rows.values()):
        print("Some numbers differ by more than the noise: check your installed versions against constraints.txt "
              "(`make doctor`), and tell us if they match.")
    return rows
