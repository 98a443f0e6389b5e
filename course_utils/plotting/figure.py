"""The figure every course plot draws on."""

from __future__ import annotations

import matplotlib.pyplot as plt


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 3.5, **kwargs):
    """A figure with a grid of axes, sized per panel: (fig, ax) or (fig, axes)."""
    fig, ax = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True, **kwargs)
    return fig, ax


def legend_below(fig, ax, title: str = "") -> None:
    """One legend for the whole figure under its panels (the lines of `ax`), then the title and a tight layout."""
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 * ((len(names) + 2) // 3) + 0.02, 1, 1))


def live_figure():
    """A function `redraw(fig)` for a loop that draws as it runs: the first figure is displayed, each later one
    replaces it in the same output area (the stored notebook keeps the last), and each is closed once shown. Outside
    IPython it only closes the figures."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # no IPython: nothing to draw into
        get_ipython = None
    handle = None

    def redraw(fig) -> None:
        nonlocal handle
        if get_ipython is not None and get_ipython() is not None:
            if handle is None:
                handle = display(fig, display_id=True)
            else:
                handle.update(fig)
        plt.close(fig)

    return redraw
