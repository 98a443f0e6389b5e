"""What every course widget is made of: figures drawn once per update, callbacks that show errors instead of raising,
wrapping control rows, and a picture of the default view for readers of the stored notebook (no kernel, no widget)."""

from __future__ import annotations

import base64
import contextlib
import io
import re
from typing import Callable

import ipywidgets as w
from matplotlib.ticker import Formatter, LogFormatterSciNotation

STORED_NOTE = "A picture of this widget's default view. Run the notebook's cells to use its controls."
_pictures: list | None = None  # PNGs collected while default_view_picture runs the update; None: display them


def show(fig, layout: bool = True) -> None:
    """Display `fig` as one PNG and close it: its log-axis labels in plain text (`plain_text_ticks`), laid out once
    (layout=False: its plot function did, and nothing was added since) and drawn once (savefig, or the inline
    backend's tight bounding box, would lay it out again first)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image as Picture

    plain_text_ticks(fig)
    if layout:
        fig.tight_layout()
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    buffer = io.BytesIO()
    picture = Picture.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    picture.save(buffer, format="png", compress_level=1)  # a quarter faster than the default level, 10 % larger
    plt.close(fig)
    if _pictures is not None:
        _pictures.append(buffer.getvalue())
    else:
        display(Image(buffer.getvalue()))


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


def wrap(text: str, width: int = 88, sep: str = " ") -> str:
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


def say(text: str, width: int = 88, sep: str = " ") -> None:
    """Print `text` wrapped by `wrap`."""
    print(wrap(text, width, sep))


def safe_callback(output, fn: Callable) -> Callable:
    """Wrap `fn()` as a widget callback (the change it is passed is ignored): run it inside `output` (an
    ipywidgets.Output), its figures kept from pyplot (`plotting.figure.off_pyplot`), showing any error as text."""
    from ..plotting.figure import off_pyplot

    def wrapped(*_change):
        output.clear_output(wait=True)
        with output:
            try:
                with off_pyplot():
                    fn()
            except Exception as exc:  # shown to the user; the kernel keeps running
                print(f"Could not update: {type(exc).__name__}: {exc}")
    return wrapped


def default_view_picture(update: Callable, settings: str = "") -> bytes:
    """Run `update` once, collecting its figures (drawn with `show`) and printed lines instead of showing them; return
    one PNG: the STORED_NOTE caption and the controls' `settings`, the figures stacked, the printed lines below."""
    global _pictures
    from matplotlib.figure import Figure
    from PIL import Image

    from ..plotting.figure import off_pyplot

    _pictures, text = [], io.StringIO()
    try:
        with contextlib.redirect_stdout(text), off_pyplot():
            update()
        figures = _pictures
    except Exception as exc:  # the live widget shows the same error as a message
        figures, text = [], io.StringIO(f"Could not draw the default view: {type(exc).__name__}: {exc}")
    finally:
        _pictures = None
    parts = [Image.open(io.BytesIO(png)) for png in figures]
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
    if text.getvalue().strip():
        parts.append(text_image(text.getvalue().rstrip(), fontsize=8, family="monospace"))
    sheet = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    top = 0
    for part in parts:
        sheet.paste(part.convert("RGB"), (0, top))
        top += part.height
    buffer = io.BytesIO()
    sheet.save(buffer, format="png")
    return buffer.getvalue()


class Explorer(w.VBox):
    """A widget's controls and output. Displayed, it also carries `picture` (PNG bytes) and a one-line note, which a
    notebook viewer without the live widget (an untrusted stored notebook, GitHub) shows instead."""

    def __init__(self, children, picture: bytes):
        super().__init__(children)
        self.picture = picture

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = STORED_NOTE
        data["image/png"] = base64.b64encode(self.picture).decode()
        return data


def live_rows(update: Callable, rows: list[list], output):
    """Run `update` (inside `output`, errors shown as text) now and whenever a control in `rows` changes; return an
    Explorer: the controls, one wrapping row per list (narrow screens wrap them instead of shrinking them), above the
    output, with a picture of this first view for the stored notebook."""
    controls = [c for row in rows for c in row if hasattr(c, "value") and not isinstance(c, w.HTML)]

    def shown(c):  # a control's value as its reader sees it: quoted text, an option's label
        return repr(c.value) if isinstance(c, w.Text) else getattr(c, "label", None) or c.value

    settings = "; ".join(f"{c.description} {shown(c)}" for c in controls if c.description)
    picture = default_view_picture(update, wrap(settings, 95, sep="; "))
    callback = safe_callback(output, update)
    for control in controls:
        control.observe(callback, names="value")
    callback()
    return Explorer([w.HBox(row, layout=w.Layout(flex_flow="row wrap")) for row in rows] + [output], picture)
