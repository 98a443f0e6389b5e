"""Lecture 05: decoding_explorer, the next-token distribution before and after temperature and the filters."""

from __future__ import annotations

import ipywidgets as w

from ..checks import check_int
from .core import live_rows, say, show


def decoding_explorer(model, tokenizer, prompt: str, *, max_new_tokens: int = 12, seed: int = 0, top: int = 15):
    """Sliders for temperature, top-k, top-p, min-p and repetition penalty over the next-token distribution of
    `prompt`: bars before/after filtering (kept tokens, mass, entropy) and a seeded sampled continuation of
    `max_new_tokens` (each costs a forward pass at every move: 12 keep a course-tiny update within the widgets' aim of
    0.3 s on 2 cores, benchmarks/bench_widgets.py)."""
    import torch

    from ..decoding import filter_view, generate
    from ..plotting import new_figure, plot_next_token_filter, redraw_next_token_filter

    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    check_int("max_new_tokens", max_new_tokens)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float().cpu()  # (V,) computed once
    vocab = logits.numel()
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="280px"))  # labels never cut
    top_k_options = [0] + [k for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500) if k < vocab]  # 0 keeps all V
    sliders = {
        "temperature": w.FloatLogSlider(value=1.0, base=10, min=-2, max=1, step=0.05, description="temperature", **wide),
        "top_k": w.SelectionSlider(options=top_k_options, value=0, description="top-k (0 = off)", **wide),
        "top_p": w.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top-p", **wide),
        "min_p": w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="min-p", **wide),
        "repetition_penalty": w.FloatSlider(value=1.0, min=0.5, max=3.0, step=0.05, description="repetition penalty",
                                            **wide),
    }
    in_prompt = set(ids[0].tolist())
    drawn = {}  # the first update's figure; later ones set its bars and title in place

    def update():
        values = {name: s.value for name, s in sliders.items()}
        view = filter_view(logits, ids.cpu(), **values)
        if drawn:
            redraw_next_token_filter(drawn["ax"], view, tokenizer, top=top)
        else:
            fig, ax = new_figure(width=7.0, height=3.2)
            plot_next_token_filter(view, tokenizer, top=top, ax=ax)
            drawn.update(fig=fig, ax=ax)
        show(drawn["fig"])  # laid out as last time where the labels take the same room
        shown = torch.topk(logits, min(top, vocab)).indices.tolist()
        if not in_prompt.intersection(shown):
            say(f"None of the {len(shown)} likeliest tokens occurs in the prompt, so the repetition penalty (which acts "
                "only on tokens already in the text) cannot change this chart; try a prompt that repeats words.")
        sample = generate(model, ids, max_new_tokens, strategy="sample", temperature=values["temperature"],
                          top_k=values["top_k"], top_p=values["top_p"],
                          min_p=values["min_p"] if values["min_p"] > 0 else None,
                          repetition_penalty=values["repetition_penalty"],
                          generator=torch.Generator(device=device).manual_seed(seed))
        say(f"sample (seed {seed}, {sample.shape[1] - ids.shape[1]} new tokens): {prompt}|"
            f"{tokenizer.decode(sample[0, ids.shape[1]:])}")

    names = list(sliders)  # at 1024 px each row wraps instead of shrinking the sliders to slivers
    return live_rows(update, [[sliders[k] for k in names[:3]], [sliders[k] for k in names[3:]]])
