"""Pure plotting helpers: each returns (fig, ax) and never writes files."""

from __future__ import annotations

import matplotlib.pyplot as plt


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 3.5, **kwargs):
    """A figure with a grid of axes, sized per panel: (fig, ax) or (fig, axes)."""
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True, **kwargs)
    return fig, ax


# ---- 01 attention plots (issue 3) ----

# ---- 02 norms plots (issue 4) ----

# ---- 03 positional plots (issue 4) ----

# ---- 04 moe plots (issue 5) ----

# ---- 05 decoding plots (issue 6) ----

# ---- 06 lora / memory plots (issue 7) ----

# ---- 07 sft plots (issue 8) ----
