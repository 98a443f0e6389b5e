"""Widgets and live figures: figures drawn once, a picture of the default view carried by every displayed explorer."""

import base64
import io

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from course_utils import widgets  # noqa: E402


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_default_view_picture_stacks_caption_figures_and_printed_lines():
    def update():
        for width, height in ((6.0, 3.0), (4.0, 2.0)):
            fig = plt.figure(figsize=(width, height), dpi=100)
            fig.add_subplot().plot([0, 1], [1, 0])
            widgets.show(fig)
        print("first line\nsecond line")

    picture = Image.open(io.BytesIO(widgets.default_view_picture(update)))
    assert picture.width == 700  # the widest part: the 700-px caption row (figures are 600 and 400 px wide)
    caption, text = 0.18 + 0.1, 0.18 * 2 + 0.1  # inches of the caption and of two printed lines
    assert abs(picture.height - 100 * (caption + 3.0 + 2.0 + text)) <= 2
    assert plt.get_fignums() == []  # every figure closed
    pixels = picture.convert("L").getextrema()
    assert pixels[0] < 100 and pixels[1] == 255  # drawn on, not blank


def test_default_view_picture_shows_an_error_instead_of_raising():
    def update():
        raise ValueError("bad setting")

    assert _png_size(widgets.default_view_picture(update))[0] == 700


def test_an_update_swaps_the_views_picture_in_place_and_shows_an_error_as_text():
    import ipywidgets as W

    slider = W.IntSlider(value=0, min=0, max=9)

    def update():
        if slider.value == 9:
            raise ValueError("bad setting")
        fig = plt.figure(figsize=(3.0, 2.0), dpi=100)
        fig.add_subplot().plot([0, 1], [0, slider.value])
        widgets.show(fig)
        print(f"slope {slider.value} < 9")

    box = widgets.live_rows(update, [[slider]])
    assert slider.continuous_update is False  # a drag sends one value, not one per step
    first = box.view.children[0]
    assert isinstance(first, W.Image) and first.value[:4] == b"\x89PNG" and _png_size(first.value) == (300, 200)
    assert box.view.shown_text() == "slope 0 < 9"  # printed text, HTML-escaped and read back
    old = first.value
    slider.value = 3
    assert box.view.children[0] is first and first.value != old  # the same Image widget, a new picture
    assert box.view.shown_text() == "slope 3 < 9"
    slider.value = 9
    assert box.view.children == (box.view.text,)  # no stale figure under an error
    assert box.view.shown_text() == "Could not update: ValueError: bad setting"
    slider.value = 2
    assert len(box.view.children) == 2 and box.view.shown_text() == "slope 2 < 9"
    assert plt.get_fignums() == []


def test_a_view_reuses_a_tight_layout_only_where_the_labels_take_the_same_room():
    from course_utils.widgets.core import _layout_key

    def figure(top, title="t"):
        fig = plt.figure(figsize=(4.0, 3.0), dpi=100)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, top])
        ax.set(title=title, xlabel="x", ylabel="y")
        return fig

    assert _layout_key(figure(2.0)) == _layout_key(figure(3.0))  # ticks 0.0 ... 2.0 and 0.0 ... 3.0
    assert _layout_key(figure(2.0)) != _layout_key(figure(2000.0))  # 0 ... 2000: wider labels, a new layout
    assert _layout_key(figure(2.0)) == _layout_key(figure(2.0, "a longer title"))  # centred: only its lines count
    assert _layout_key(figure(2.0)) != _layout_key(figure(2.0, "two\nlines"))
    same = [figure(2.0), figure(3.0)]
    for fig in same:
        fig.tight_layout()
    for name in ("left", "right", "bottom", "top"):  # what each would get on its own, within a pixel
        assert abs(getattr(same[0].subplotpars, name) - getattr(same[1].subplotpars, name)) * 300 < 1, name
    plt.close("all")


def test_garbage_collection_is_paused_during_an_update_and_resumed_after_the_last():
    import gc
    import time

    from course_utils.widgets.core import _CollectionPause

    for _ in range(100):  # an earlier test's widget update may still hold the module's own pause for a moment
        if gc.isenabled():
            break
        time.sleep(0.05)
    assert gc.isenabled()
    pause = _CollectionPause(delay=0.05)
    with pause:
        assert not gc.isenabled()
    assert not gc.isenabled()  # still paused while the update's messages leave
    time.sleep(1.0)
    assert gc.isenabled()
    with pause:
        pass
    with pause:  # a second update within the delay: the first one's resume must not switch it back on
        time.sleep(0.3)
        assert not gc.isenabled()
    time.sleep(1.0)
    assert gc.isenabled()
    gc.disable()
    try:
        with pause:
            pass
        time.sleep(1.0)
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_a_displayed_explorer_carries_its_picture_and_a_note():
    box = widgets.moe_explorer()
    bundle = box._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
    assert bundle["text/plain"] == widgets.core.STORED_NOTE
    width, height = _png_size(base64.b64decode(bundle["image/png"]))
    assert width >= 600 and height >= 300
    plt.close("all")


def test_new_figure_off_pyplot_is_unknown_to_pyplot_and_keeps_its_options():
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from course_utils.plotting.figure import new_figure, off_pyplot

    plt.close("all")
    with off_pyplot():
        fig, axes = new_figure(1, 2, width=3.0, height=2.0, sharey=True, constrained_layout=True)
    assert plt.get_fignums() == []
    assert tuple(fig.get_size_inches()) == (6.0, 2.0) and len(axes) == 2
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    new_figure()
    assert len(plt.get_fignums()) == 1  # outside, pyplot knows it (a notebook cell shows it)
    plt.close("all")


def test_a_widget_update_draws_on_figures_pyplot_does_not_know(monkeypatch):
    """ipykernel 7 may run pyplot's redraw of all open figures on another thread while a widget updates; two threads
    in matplotlib's math-text parser break it (the browser test saw "ParseException" from the RoPE explorer)."""
    from course_utils.widgets import positional

    known = []

    def spy(fig):
        known.append(plt.get_fignums())
        widgets.show(fig)

    monkeypatch.setattr(positional, "show", spy)
    plt.close("all")
    box = widgets.rope_explorer()
    box.children[0].children[0].value = 1e7  # the base slider: a live update
    assert len(known) == 2 and known == [[]] * 2  # the first view (live and pictured) and the update: one figure each


def test_live_figure_outside_ipython_closes_each_figure():
    from course_utils.plotting import live_figure

    redraw = live_figure()
    for _ in range(2):
        fig = plt.figure()
        redraw(fig)
        assert plt.get_fignums() == []


def test_wrap_breaks_between_items_then_words():
    from course_utils.widgets.core import wrap

    assert wrap("aa bb cc", 5) == "aa bb\n  cc"
    assert wrap("x 1; y 2; z 3", 8, sep="; ") == "x 1; y 2;\n  z 3"  # never inside "y 2"
    assert wrap("x 1; a long item here", 8, sep="; ") == "x 1;\n  a long\n  item\n  here"
    assert wrap("short", 88) == "short"


def test_plain_text_ticks_keep_which_log_ticks_are_labelled_and_write_them_without_math_text():
    fig = plt.figure()
    wide, narrow, both = fig.subplots(1, 3)
    wide.semilogy([1e-2, 1e3])
    narrow.semilogy([0.15, 0.9])  # under one decade: matplotlib labels some minor ticks (2×10⁻¹, ...)
    both.set_yscale("symlog", linthresh=0.01)
    both.plot([-100, 100])
    fig.canvas.draw()
    before = [[t.get_text() for t in ax.get_yticklabels(which="both")] for ax in fig.axes]
    widgets.core.plain_text_ticks(fig)
    fig.canvas.draw()
    after = [[t.get_text() for t in ax.get_yticklabels(which="both")] for ax in fig.axes]
    plt.close(fig)
    assert "10³" in after[0] and "10⁻²" in after[0] and "10⁰" in after[0]
    assert "2×10⁻¹" in after[1]
    assert "−10²" in after[2] and "0" in after[2]
    for old, new in zip(before, after):
        assert [bool(s) for s in old] == [bool(s) for s in new]  # the same ticks labelled
        assert all("$" not in s for s in new) and any("$" in s for s in old)


def test_off_pyplot_figures_share_a_renderer_without_mixing_their_pictures():
    import threading

    from course_utils.plotting.figure import new_figure, off_pyplot

    def picture(fig) -> bytes:
        fig.canvas.draw()
        return bytes(fig.canvas.buffer_rgba())

    with off_pyplot():
        (first, ax1), (second, ax2) = new_figure(), new_figure()
    ax1.plot([0, 1], [0, 1], label="rising")
    ax2.bar(["a", "b"], [3, 1])
    ax2.set_title("bars")
    alone = picture(first)
    assert picture(second) != alone
    assert picture(first) == alone  # drawing the second figure left nothing behind in the first one's picture
    assert first.canvas.get_renderer() is second.canvas.get_renderer()
    other_thread = []
    worker = threading.Thread(target=lambda: other_thread.append(first.canvas.get_renderer()))
    worker.start()
    worker.join()
    assert other_thread[0] is not first.canvas.get_renderer()  # two threads never draw on one renderer


def _pixels_differ(png: bytes, other: bytes):
    """The box where two PNGs differ, or None where they are the same picture."""
    from PIL import ImageChops

    pictures = [Image.open(io.BytesIO(p)).convert("RGB") for p in (png, other)]
    assert pictures[0].size == pictures[1].size
    return ImageChops.difference(*pictures).getbbox()


@pytest.fixture
def shown_figures(monkeypatch):
    """The figures `show` draws from here on, in order."""
    shown, label_ticks = [], widgets.core.plain_text_ticks  # `show` calls it on every figure it draws
    monkeypatch.setattr(widgets.core, "plain_text_ticks", lambda fig: (shown.append(fig), label_ticks(fig)))
    return shown


def _drawn_anew(build, like) -> bytes:
    """The PNG of the new figure `build()` returns, laid out as the figure `like` (a tight layout depends a little on
    where the axes were before it: this compares what is drawn, not how it is laid out)."""
    from course_utils.plotting.figure import off_pyplot

    with off_pyplot():
        fig = build()
    fig.subplots_adjust(**{k: getattr(like.subplotpars, k) for k in widgets.core._SUBPLOT_PARAMS})
    pictures, text = widgets.run_update(lambda: widgets.show(fig, layout=False))
    assert len(pictures) == 1, text
    return pictures[0]


def test_rope_explorer_moves_its_lines_in_place_to_the_picture_a_new_figure_shows(shown_figures):
    from course_utils.plotting import new_figure, plot_rope_wavelengths, plot_score_bound
    from course_utils.positional import rope_inv_freq, rope_score_bound, rope_wavelengths

    box = widgets.rope_explorer()
    base, method, factor, context = (c for row in box.children[:2] for c in row.children)
    for b, m, s, L in [(100.0, "linear", 2.0, 64), (1e6, "llama3", 64.0, 32768), (10.0, "ntk", 1.0, 1024)]:
        base.value, method.value, factor.value, context.value = b, m, s, L
        scaling = {"rope_type": m, "factor": s, **({"original_max_position_embeddings": L} if m == "llama3" else {}),
                   **({"low_freq_factor": 1.0, "high_freq_factor": 4.0} if m == "llama3" else {})}

        def build():
            fig, (top, bottom) = new_figure(2, 1, width=6.0, height=3.4)
            plot_rope_wavelengths(rope_wavelengths(rope_inv_freq(64, b)[0]), L,
                                  {f"{m} s={s:g}": rope_wavelengths(rope_inv_freq(64, b, scaling)[0])}, ax=top)
            plot_score_bound({"plain": rope_score_bound(64, b, int(4 * L * s)),
                              f"{m} s={s:g}": rope_score_bound(64, b, int(4 * L * s), scaling)}, int(L * s), ax=bottom)
            for ax in (top, bottom):
                ax.minorticks_off()
            return fig

        assert shown_figures[-1] is shown_figures[0]  # the first view's figure, moved
        assert _pixels_differ(box.view.children[0].value, _drawn_anew(build, shown_figures[-1])) is None, (b, m, s, L)


def test_decoding_explorer_sets_its_bars_in_place_to_the_picture_a_new_figure_shows(shown_figures):
    import torch

    from course_utils import load_model
    from course_utils.decoding import filter_view
    from course_utils.plotting import new_figure, plot_next_token_filter

    model, tok = load_model("course-tiny", device="cpu")
    box = widgets.decoding_explorer(model, tok, "Once upon a time", max_new_tokens=2)
    temperature, top_k, top_p, min_p, penalty = (c for row in box.children[:2] for c in row.children)
    ids = tok("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    for settings in [dict(temperature=0.3, top_k=5), dict(temperature=2.0, top_k=0, top_p=0.5, min_p=0.05),
                     dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=2.0)]:
        for name, value in settings.items():
            {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
             "repetition_penalty": penalty}[name].value = value
        current = dict(temperature=temperature.value, top_k=top_k.value, top_p=top_p.value, min_p=min_p.value,
                       repetition_penalty=penalty.value)

        def build():
            fig, ax = new_figure(width=7.0, height=3.2)
            plot_next_token_filter(filter_view(logits, ids, **current), tok, ax=ax)
            return fig

        assert shown_figures[-1] is shown_figures[0]  # the first view's figure, its bars set anew
        assert _pixels_differ(box.view.children[0].value, _drawn_anew(build, shown_figures[-1])) is None, current


def test_attention_explorer_redraws_a_new_text_in_place_to_the_picture_a_new_figure_shows(shown_figures):
    from course_utils import load_model
    from course_utils.attention import attention_maps
    from course_utils.plotting import new_figure, plot_attention_weights, plot_entropy_grid

    model, tok = load_model("course-tiny", device="cpu", attn_implementation="eager")
    box = widgets.attention_explorer(model, tok, "Once upon a time")
    text, (layer, head) = box.children[0].children[0], box.children[2].children
    for words, at in [("The cat sat on the mat.", (1, 2)), ("Rosa", (3, 0)), ("Once upon a time", (0, 3))]:
        text.value, layer.value, head.value = words, *at
        maps = attention_maps(model, tok, words)

        def build():
            fig, (heatmap, grid) = new_figure(1, 2, width=3.7, height=3.7)
            plot_attention_weights(maps["weights"][at], maps["tokens"], maps["tokens"], ax=heatmap,
                                   title=f"layer {at[0]}, head {at[1]}")
            plot_entropy_grid(maps["entropy"], uniform=maps["uniform_entropy"], ax=grid, title="mean entropy")
            return fig

        assert shown_figures[-1] is shown_figures[0]  # the first view's figure, redrawn
        assert _pixels_differ(box.view.children[0].value, _drawn_anew(build, shown_figures[-1])) is None, words
    text.value = "word " * 45  # more tokens than a heatmap labels: a new figure
    assert shown_figures[-1] is not shown_figures[0] and "Could not update" not in box.view.shown_text()
    with pytest.raises(ValueError, match="entropy must have the drawn grid's 16 cells"):
        from course_utils.plotting import redraw_entropy_grid

        redraw_entropy_grid(shown_figures[0].axes[1], maps["entropy"][:2])


def test_quant_explorer_moves_its_grid_lines_in_place_to_the_picture_a_new_figure_shows(shown_figures):
    from course_utils import load_model, quant
    from course_utils.env import REPO_ROOT
    from course_utils.plotting import plot_weight_grid

    box = widgets.quant_explorer(n_calibration=4)
    (layer, method), (bits, group) = (row.children for row in box.children[:2])
    model, _ = load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
    for m, b, g in [("rtn", 2, 0), ("rtn", 8, 32), ("rtn", 3, 64)]:
        method.value, bits.value, group.value = m, b, g
        weight = dict(model.named_modules())[layer.value].weight.detach()
        w_hat = quant.layer_errors(weight, weight[:2], weight[:2], m, b, g or None)["w_hat"]  # rtn: no calibration

        def build():
            fig, _ = plot_weight_grid(weight[0], w_hat[0],
                                      title=f"row 0 of {layer.value}: float weights and the values they round to")
            return fig

        assert shown_figures[-1] is shown_figures[0]  # the first view's figure, its lines moved
        assert _pixels_differ(box.view.children[0].value, _drawn_anew(build, shown_figures[-1])) is None, (m, b, g)
    layer.value = layer.options[0]  # another layer: another row, a new figure
    assert shown_figures[-1] is not shown_figures[0]
