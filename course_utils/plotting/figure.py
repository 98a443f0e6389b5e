"""The figure every course plot draws on."""

from __future__ import annotations

import contextlib
import contextvars
import threading

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

_off_pyplot = contextvars.ContextVar("off_pyplot", default=False)


@contextlib.contextmanager
def off_pyplot():
    """Inside, `new_figure` makes figures that pyplot does not know, so none of its hooks draws or shows them. A
    widget's update draws this way: ipykernel 7 may run pyplot's redraw of every open figure (an IPython post-execute
    hook) on another thread while the update draws, and matplotlib's math-text parser breaks when two threads use it.
    The flag belongs to the current thread (a context variable)."""
    token = _off_pyplot.set(True)
    try:
        yield
    finally:
        _off_pyplot.reset(token)


class _SharedRendererCanvas(FigureCanvasAgg):
    """An Agg canvas that draws with one renderer per thread, figure size and dpi, shared by all such figures: the
    renderer keeps the sizes of texts it has laid out, so a widget's next figure need not measure its labels again."""

    _renderers = threading.local()

    def get_renderer(self):
        key = (*self.figure.bbox.size, self.figure.dpi)
        renderers = self._renderers.__dict__.setdefault("by_key", {})
        if key not in renderers:
            renderers[key] = RendererAgg(*key)
        return renderers[key]


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 3.5, **kwargs):
    """A figure with a grid of axes, sized per panel: (fig, ax) or (fig, axes). `kwargs` go to `plt.subplots`.
    Off pyplot (a widget's update), titles sit at a fixed height just above the axes: matplotlib's automatic placement,
    which measures the tick labels once more in case an axis or offset text sits on top, took 7 % of rope_explorer's
    redraw (tests/test_bad_inputs.py checks that no widget's title needs it)."""
    size = (width * ncols, height * nrows)
    if not _off_pyplot.get():
        return plt.subplots(nrows, ncols, figsize=size, squeeze=True, **kwargs)
    figure_kwargs = {k: kwargs.pop(k) for k in ("constrained_layout", "layout", "dpi") if k in kwargs}
    fig = Figure(figsize=size, **figure_kwargs)
    _SharedRendererCanvas(fig)  # a canvas with a renderer: tight_layout need not draw the figure to measure it
    with matplotlib.rc_context({"axes.titley": 1.0}):  # 1.0 fixes the height; None (the default) places it
        return fig, fig.subplots(nrows, ncols, squeeze=True, **kwargs)


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
