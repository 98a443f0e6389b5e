"""What every course widget is made of: figures drawn once per update, callbacks that show errors instead of raising,
wrapping control rows, and a picture of the default view for readers of the stored notebook (no kernel, no widget)."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import gc
import html
import io
import re
import threading
from typing import Callable

import ipywidgets as w
from matplotlib.ticker import Formatter, LogFormatterSciNotation

STORED_NOTE = "A picture of this widget's default view. Run the notebook's cells to use its controls."
_collected = contextvars.ContextVar("collected", default=None)  # PNGs `show` gathers while `run_update` runs
_layouts = contextvars.ContextVar("layouts", default=None)  # a View's tight layouts by `_layout_key`, while it updates
_SUBPLOT_PARAMS = ("left", "right", "bottom", "top", "wspace", "hspace")


def show(fig, layout: bool = True) -> None:
    """Display `fig` as one PNG and close it: its log-axis labels in plain text (`plain_text_ticks`), laid out once
    (layout=False: its plot function did, and nothing was added since) and drawn once (savefig, or the inline
    backend's tight bounding box, would lay it out again first). A figure made off pyplot may be changed and shown
    again (a widget redrawing in place)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image as Picture

    plain_text_ticks(fig)
    if layout:
        _tight_layout(fig)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    buffer = io.BytesIO()
    picture = Picture.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    picture.save(buffer, format="png", compress_level=1)  # a quarter faster than the default level, 10 % larger
    plt.close(fig)
    collected = _collected.get()
    if collected is not None:
        collected.append(buffer.getvalue())
    else:
        display(Image(buffer.getvalue()))


def _layout_key(fig) -> tuple:
    """What decides a figure's tight layout: its size and, per axes, the lines of its title and axis labels and the
    lengths of the tick labels in view (first, last, longest; the draw reuses the ticks computed here)."""
    def lengths(axis):
        low, high = sorted(axis.get_view_interval())
        slack = 1e-9 * (high - low)
        locs, formatter = axis.get_majorticklocs(), axis.get_major_formatter()
        shown = [len(label) for x, label in zip(locs, formatter.format_ticks(locs))
                 if low - slack <= x <= high + slack] or [0]
        return shown[0], shown[-1], max(shown), formatter.get_offset()  # e.g. "1e6" above a linear axis

    def lines(text):  # a title or axis label takes room by its lines, not its length (it is centred)
        return text.count("\n") + 1 if text else 0

    return (tuple(fig.get_size_inches()), *((ax.get_position().bounds if not ax.get_subplotspec() else None,
                                            lines(ax.get_title()), lines(ax.get_xlabel()), lines(ax.get_ylabel()),
                                            lengths(ax.xaxis), lengths(ax.yaxis)) for ax in fig.axes))


def _tight_layout(fig) -> None:
    """`fig.tight_layout()`, or, inside a View's update, the layout it computed for a figure with the same
    `_layout_key` (a third of a redraw's time, saved when a slider moves the data but not the labels)."""
    layouts = _layouts.get()
    if layouts is None:
        fig.tight_layout()
        return
    key = _layout_key(fig)
    if key in layouts:
        fig.subplots_adjust(**layouts[key])
    else:
        fig.tight_layout()
        layouts[key] = {name: getattr(fig.subplotpars, name) for name in _SUBPLOT_PARAMS}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _plain_text(label: str) -> str:
    r"""A log-axis label in math text ('$\mathdefault{2\times10^{-1}}$') as plain text ('2×10⁻¹')."""
    match = re.fullmatch(r"\$\\mathdefault\{(.*)\}\$", label)
    if not match:
        return label
    text = match.group(1).replace("\\times", "×").replace("\\mathregular", "")
    text = re.sub(r"\^\{([^}]*)\}", lambda m: m.group(1).translate(_SUPERSCRIPT), text)
    return text.replace("-", "\N{MINUS SIGN}")  # what math text draws for a hyphen


class _PlainTextTicks(Formatter):
    """A log axis's formatter, its labels turned into plain text (it still decides which ticks are labelled)."""

    def __init__(self, inner: Formatter):
        self.inner = inner

    def set_axis(self, axis):
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def format_ticks(self, values):
        return [_plain_text(label) for label in self.inner.format_ticks(values)]

    def __call__(self, x, pos=None):
        return _plain_text(self.inner(x, pos))


def plain_text_ticks(fig) -> None:
    """Label the log axes of `fig` in plain text ('10³') instead of math text: parsing math text anew for every
    figure was about a fifth of a widget's redraw."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for get, set_ in ((axis.get_major_formatter, axis.set_major_formatter),
                              (axis.get_minor_formatter, axis.set_minor_formatter)):
                if isinstance(get(), LogFormatterSciNotation):
                    set_(_PlainTextTicks(get()))


def wrap(text: str, width: int = 80, sep: str = " ") -> str:
    """`text` in lines of at most `width` characters where it can (continuation lines indented), broken only between
    the items that `sep` separates (an item longer than a line is broken between its words): a browser would break a
    long output line mid-word."""
    lines = [""]
    for item in text.split(sep):
        joined = f"{lines[-1]}{sep}{item}" if lines[-1] else item
        if len(joined) <= width:
            lines[-1] = joined
            continue
        if lines[-1]:
            lines[-1] += sep.rstrip()
            lines.append("")
        pieces = wrap(item, width).split("\n  ") if sep != " " else [item]
        lines[-1] = pieces[0]
        lines += pieces[1:]
    return "\n  ".join(lines)


def say(text: str, width: int = 80, sep: str = " ") -> None:
    """Print `text` wrapped by `wrap`."""
    print(wrap(text, width, sep))


def run_update(update: Callable, layouts: dict | None = None) -> tuple[list[bytes], str]:
    """Run `update()` with its figures kept from pyplot (`plotting.figure.off_pyplot`): (the PNG of each figure it
    drew with `show`, the text it printed). An error does not raise: it ends the text as "Could not update: ...".
    layouts: a View's memo of tight layouts (`_tight_layout`), kept from one update to the next."""
    from ..plotting.figure import off_pyplot

    pictures, text = [], io.StringIO()
    token, layouts_token = _collected.set(pictures), _layouts.set(layouts)
    try:
        with contextlib.redirect_stdout(text), off_pyplot():
            update()
    except Exception as exc:  # shown to the user; the kernel keeps running
        print(f"Could not update: {type(exc).__name__}: {exc}", file=text)
    finally:
        _collected.reset(token)
        _layouts.reset(layouts_token)
    return pictures, text.getvalue()


# 80 characters (`say`) fit the output column at 1024 px with the sidebar open; lines are never wrapped again
_TEXT_STYLE = "margin: 0; font-size: 12px; line-height: 1.35; white-space: pre; overflow-x: auto"


class View(w.VBox):
    """What an explorer shows under its controls: an Image widget per figure, then the printed text. An update sets
    their values in place, so the browser swaps a picture instead of clearing and rebuilding an output area."""

    def __init__(self):
        self.text, self.layouts = w.HTML(), {}
        super().__init__([self.text])
        self.add_class("course-widget-view")

    def set(self, pictures: list[bytes], text: str) -> None:
        images = [c for c in self.children if isinstance(c, w.Image)]
        images += [w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
                   for _ in range(len(pictures) - len(images))]
        for image, png in zip(images, pictures):
            image.value = png
        if len(self.children) != len(pictures) + 1:  # a figure more or fewer than last time
            self.children = [*images[:len(pictures)], self.text]
        self.text.value = f"<pre style='{_TEXT_STYLE}'>{html.escape(text.rstrip())}</pre>" if text.strip() else ""

    def shown_text(self) -> str:
        """The printed text, as the reader sees it."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.text.value))


class _CollectionPause:
    """Python's full garbage collection kept out of widget updates. With a model loaded it takes about 0.3 s (450,000
    objects), and an update it fell into took 0.6 s in the browser test; it is paused while an update runs and
    resumed `delay` seconds after the last one ends, once the update's messages have left the kernel. Where it was
    off already, it stays off."""

    def __init__(self, delay: float = 0.25):
        self.delay, self.running, self.lock = delay, 0, threading.Lock()
        self.resume_enabled = True

    def __enter__(self):
        with self.lock:
            if self.running == 0:
                self.resume_enabled = gc.isenabled()
            self.running += 1
            gc.disable()

    def __exit__(self, *exc):
        timer = threading.Timer(self.delay, self._resume)
        timer.daemon = True
        timer.start()

    def _resume(self):
        with self.lock:
            self.running -= 1
            if self.running == 0 and self.resume_enabled:
                gc.enable()


_collection_pause = _CollectionPause()


def safe_callback(view: View, fn: Callable) -> Callable:
    """Wrap `fn()` as a widget callback (the change it is passed is ignored) whose figures and text go to `view`,
    an error shown there as text (`run_update`), with no full garbage collection in the way (`_CollectionPause`)."""

    def wrapped(*_change):
        with _collection_pause:
            view.set(*run_update(fn, view.layouts))
    return wrapped


def picture_sheet(pictures: list[bytes], text: str, settings: str = "") -> bytes:
    """One PNG of an update's output for readers without a kernel: the STORED_NOTE caption and the controls'
    `settings`, the figures stacked, the printed lines below."""
    from matplotlib.figure import Figure
    from PIL import Image

    parts = [Image.open(io.BytesIO(png)) for png in pictures]
    width = max([p.width for p in parts] + [700])

    def text_image(lines: str, **style):
        n = max(1, lines.count("\n") + 1)
        fig = Figure(figsize=(width / 100, 0.18 * n + 0.1), dpi=100)
        fig.text(0.01, 0.5, lines, va="center", ha="left", **style)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return Image.open(buffer)

    parts.insert(0, text_image(STORED_NOTE + (f"\nSettings: {settings}" if settings else ""), fontsize=9,
                               style="italic", color="dimgray"))
    if text.strip():
        parts.append(text_image(text.rstrip(), fontsize=8, family="monospace"))
    sheet = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    top = 0
    for part in parts:
        sheet.paste(part.convert("RGB"), (0, top))
        top += part.height
    buffer = io.BytesIO()
    sheet.save(buffer, format="png")
    return buffer.getvalue()


def default_view_picture(update: Callable, settings: str = "") -> bytes:
    """`picture_sheet` of one run of `update`."""
    return picture_sheet(*run_update(update), settings)


class Explorer(w.VBox):
    """A widget's controls and output. Displayed, it also carries `picture` (PNG bytes) and a one-line note, which a
    notebook viewer without the live widget (an untrusted stored notebook, GitHub) shows instead."""

    def __init__(self, children, picture: bytes, view: View):
        super().__init__(children)
        self.picture, self.view = picture, view

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = STORED_NOTE
        data["image/png"] = base64.b64encode(self.picture).decode()
        return data


def live_rows(update: Callable, rows: list[list]):
    """Run `update` now and whenever a control in `rows` changes, its figures and text shown in a `View`; return an
    Explorer: the controls, one wrapping row per list (narrow screens wrap them instead of shrinking them), above the
    view, with a picture of this first view for the stored notebook. A slider sends its value when it is let go (or
    on each key press), not at every step of a drag: the kernel would redraw every step, one after the other."""
    controls = [c for row in rows for c in row if hasattr(c, "value") and not isinstance(c, w.HTML)]
    for control in controls:
        if hasattr(control, "continuous_update"):
            control.continuous_update = False

    def shown(c):  # a control's value as its reader sees it: quoted text, an option's label
        return repr(c.value) if isinstance(c, w.Text) else getattr(c, "label", None) or c.value

    settings = "; ".join(f"{c.description} {shown(c)}" for c in controls if c.description)
    view = View()
    pictures, text = run_update(update, view.layouts)  # the first view, live and pictured
    view.set(pictures, text)
    callback = safe_callback(view, update)
    for control in controls:
        control.observe(callback, names="value")
    return Explorer([w.HBox(row, layout=w.Layout(flex_flow="row wrap")) for row in rows] + [view],
                    picture_sheet(pictures, text, wrap(settings, 95, sep="; ")), view)
