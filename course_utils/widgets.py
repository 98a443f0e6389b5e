"""Interactive widgets for class demos. Each is a thin shell over pure functions the tests call directly;
a widget catches errors from its callbacks and shows them as a message, so it cannot crash the kernel."""

from __future__ import annotations

from typing import Callable


def safe_callback(output, fn: Callable) -> Callable:
    """Wrap a widget callback: run `fn` inside `output` (an ipywidgets.Output), showing any error as text."""
    def wrapped(*args, **kwargs):
        output.clear_output(wait=True)
        with output:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # shown to the user; the kernel keeps running
                print(f"Could not update: {type(exc).__name__}: {exc}")
    return wrapped


# ---- 01 attention_explorer (issue 3) ----

# ---- 05 decoding_explorer (issue 6) ----

# ---- 06 memory_explorer (issue 7) ----
