"""The figure every course plot draws on."""

from __future__ import annotations

import matplotlib.pyplot as plt


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 3.5, **kwargs):
    """A figure with a grid of axes, sized per panel: (fig, ax) or (fig, axes)."""
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True, **kwargs)
    return fig, ax
