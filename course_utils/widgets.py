"""Interactive widgets for class demos. Each is a thin shell over pure functions the tests call directly;
a widget catches errors from its callbacks and shows them as a message, so it cannot crash the kernel."""

from __future__ import annotations

from typing import Callable

from .checks import check_int


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


def live_rows(update: Callable, rows: list[list], output):
    """Run `update` (inside `output`, errors shown as text) now and whenever a control in `rows` changes; return the
    controls, one wrapping row per list (narrow screens wrap them instead of shrinking them), above the output."""
    import ipywidgets as w

    callback = safe_callback(output, update)
    for control in (c for row in rows for c in row):
        control.observe(callback, names="value")
    callback()
    wrap = w.Layout(flex_flow="row wrap")
    return w.VBox([w.HBox(row, layout=wrap) for row in rows] + [output])


# ---- 01 attention_explorer (issue 3) ----

def attention_explorer(model, tokenizer, text: str = "Once upon a time, there was a blue fox named Rosa.",
                       *, max_tokens: int = 48):
    """Text box + layer/head sliders: the attention heatmap of one head and the layers × heads entropy grid.

    The model must return attention weights (load it with attn_implementation="eager"). Inputs longer than
    max_tokens are truncated with a note; a bad input shows a message instead of raising.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .attention import attention_maps
    from .plotting import new_figure, plot_attention_weights, plot_entropy_grid

    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    check_int("max_tokens", max_tokens)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    box = W.Text(value=text, description="text", placeholder="type, then press Enter",
                 layout=W.Layout(width="95%", min_width="300px"), continuous_update=False)
    hint = W.HTML("<small>Press Enter to redraw after editing the text. "
                  "'�' in a label is part of a character the byte-level tokenizer split over several tokens.</small>")
    layer = W.IntSlider(value=0, min=0, max=n_layers - 1, description="layer", layout=W.Layout(min_width="260px"))
    head = W.IntSlider(value=0, min=0, max=n_heads - 1, description="head", layout=W.Layout(min_width="260px"))
    out = W.Output()
    cache = {}

    def draw(*_):
        if cache.get("text") != box.value:
            cache.update(text=box.value, maps=attention_maps(model, tokenizer, box.value, max_tokens=max_tokens))
        maps = cache["maps"]
        if maps["note"]:
            print("Note:", maps["note"])
        fig, axes = new_figure(1, 2, width=5.5, height=4.5)
        plot_attention_weights(maps["weights"][layer.value, head.value], maps["tokens"], maps["tokens"], ax=axes[0],
                               title=f"layer {layer.value}, head {head.value}")
        plot_entropy_grid(maps["entropy"], uniform=maps["uniform_entropy"], ax=axes[1], title="mean entropy")
        plt.show()
        plt.close(fig)

    callback = safe_callback(out, draw)
    for w in (box, layer, head):
        w.observe(callback, names="value")
    callback()
    return W.VBox([box, hint, W.HBox([layer, head], layout=W.Layout(flex_flow="row wrap")), out])


# ---- 03 rope_explorer ----

def rope_explorer(head_dim: int = 64):
    """Sliders for RoPE's base, a scaling method and factor, and the context: each pair's wavelength against the
    context, and RoPE's long-term decay bound vs distance, plain next to scaled."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .plotting import plot_rope_wavelengths, plot_score_bound
    from .positional import rope_inv_freq, rope_score_bound, rope_wavelengths

    check_int("head_dim", head_dim, 2)
    base = w.FloatLogSlider(value=10000.0, base=10, min=1, max=7, step=0.1, description="base")
    method = w.Dropdown(options=["linear", "ntk", "yarn", "llama3"], value="yarn", description="scaling")
    factor = w.FloatLogSlider(value=8.0, base=2, min=0, max=6, step=0.5, description="factor s")
    context = w.SelectionSlider(options=[64, 256, 1024, 4096, 32768], value=256, description="trained L")
    out = w.Output()

    def update(*_):
        scaling = {"rope_type": method.value, "factor": float(factor.value)}
        if method.value in ("yarn", "llama3"):
            scaling["original_max_position_embeddings"] = context.value
        if method.value == "llama3":
            scaling.update(low_freq_factor=1.0, high_freq_factor=4.0)
        plain, _ = rope_inv_freq(head_dim, base.value)
        scaled, attention_factor = rope_inv_freq(head_dim, base.value, scaling)
        label = f"{method.value} s={factor.value:g}"
        fig, _ = plot_rope_wavelengths(rope_wavelengths(plain), context.value, {label: rope_wavelengths(scaled)})
        plt.show()
        plt.close(fig)
        reach = int(context.value * factor.value * 4)
        fig, _ = plot_score_bound({"plain": rope_score_bound(head_dim, base.value, reach),
                                   label: rope_score_bound(head_dim, base.value, reach, scaling)},
                                  context.value * factor.value)
        plt.show()
        plt.close(fig)
        turning = (rope_wavelengths(plain) <= context.value).sum().item()
        print(f"pairs that turn fully within L = {context.value}: {turning} of {head_dim // 2}; "
              f"attention factor {attention_factor:.3f}")

    return live_rows(update, [[base, method], [factor, context]], out)


# ---- 04 moe_explorer ----

def moe_explorer():
    """Sliders for top-k, capacity factor and the aux-loss coefficient: load per expert, kept and dropped, for a
    router trained on a toy objective where expert 0 is better on average (moe.router_tradeoff)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .moe import router_tradeoff
    from .plotting import plot_router_tradeoff

    top_k = w.IntSlider(value=2, min=1, max=4, description="top-k")
    capacity = w.FloatSlider(value=1.25, min=0.5, max=3.0, step=0.25, description="capacity factor",
                             style={"description_width": "initial"})
    aux = w.SelectionSlider(options=[0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], value=0.0, description="aux coef")
    out = w.Output()

    def update(*_):
        result = router_tradeoff(aux.value, top_k=top_k.value, capacity_factor=capacity.value)
        fig, ax = plot_router_tradeoff(result)
        ax.set_title(f"top-{top_k.value}, capacity factor {capacity.value:g}, aux coef {aux.value:g}", fontsize=10)
        plt.show()
        plt.close(fig)
        print(f"dropped {result['dropped']:.1%} of assignments;  aux loss {result['aux']:.2f} (even = {top_k.value});  "
              f"quality delivered {result['quality']:.2f} of the best experts'")

    return live_rows(update, [[top_k, aux], [capacity]], out)


# ---- 05 decoding_explorer (issue 6) ----

def decoding_explorer(model, tokenizer, prompt: str, *, max_new_tokens: int = 30, seed: int = 0, top: int = 15):
    """Sliders for temperature, top-k, top-p, min-p and repetition penalty over the next-token distribution of
    `prompt`: bars before/after filtering (kept tokens, mass, entropy) and a seeded sampled continuation."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    import torch

    from .decoding import filter_view, generate
    from .plotting import plot_next_token_filter

    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    check_int("max_new_tokens", max_new_tokens)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float().cpu()  # (V,) computed once
    vocab = logits.numel()
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="280px"))  # labels never cut
    top_k_options = [0] + [k for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500) if k < vocab] + [vocab]
    sliders = {
        "temperature": w.FloatLogSlider(value=1.0, base=10, min=-2, max=1, step=0.05, description="temperature", **wide),
        "top_k": w.SelectionSlider(options=top_k_options, value=0, description="top-k (0 = off)", **wide),
        "top_p": w.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top-p", **wide),
        "min_p": w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="min-p", **wide),
        "repetition_penalty": w.FloatSlider(value=1.0, min=0.5, max=3.0, step=0.05, description="repetition penalty",
                                            **wide),
    }
    in_prompt = set(ids[0].tolist())
    out = w.Output()

    def update(_=None):
        values = {name: s.value for name, s in sliders.items()}
        view = filter_view(logits, ids.cpu(), **values)
        fig, _ax = plot_next_token_filter(view, tokenizer, top=top)
        plt.show()
        plt.close(fig)
        shown = torch.topk(logits, min(top, vocab)).indices.tolist()
        if not in_prompt.intersection(shown):
            print(f"None of the {len(shown)} likeliest tokens occurs in the prompt, so the repetition penalty (which acts "
                  "only on tokens already in the text) cannot change this chart; try a prompt that repeats words.")
        sample = generate(model, ids, max_new_tokens, strategy="sample", temperature=values["temperature"],
                          top_k=values["top_k"], top_p=values["top_p"],
                          min_p=values["min_p"] if values["min_p"] > 0 else None,
                          repetition_penalty=values["repetition_penalty"],
                          generator=torch.Generator(device=device).manual_seed(seed))
        print(f"sample (seed {seed}): {prompt}|{tokenizer.decode(sample[0, ids.shape[1]:])}")

    callback = safe_callback(out, update)
    for s in sliders.values():
        s.observe(callback, names="value")
    callback()
    row = w.Layout(flex_flow="row wrap")  # at 1024 px the sliders wrap instead of shrinking to slivers
    return w.VBox([w.HBox(list(sliders.values())[:3], layout=row), w.HBox(list(sliders.values())[3:], layout=row), out])

# ---- 06 memory_explorer (issue 7) ----


def memory_explorer_report(model: str, method: str, batch_size: int, seq_len: int, lora_r: int,
                           grad_checkpointing: bool, optimizer: str) -> tuple:
    """(MemoryBreakdown, fits dict, text) for one set of explorer settings; what the widget shows."""
    from .memory import estimate_training_memory, fits

    est = estimate_training_memory(model, method, batch_size=batch_size, seq_len=seq_len, lora_r=lora_r,
                                   grad_checkpointing=grad_checkpointing, optimizer=optimizer)
    ok = fits(est)
    lines = [f"{model} | {method} | batch {batch_size} x {seq_len} tokens | optimizer {optimizer}"
             + (f" | r = {lora_r}" if method != "full" else "") + (" | checkpointing" if grad_checkpointing else ""),
             "  ".join(f"{k} {v:.1f}" for k, v in est.as_dict(1e9).items()) + "  (GB)",
             "fits (the peak, the black tick, within the GPU's memory): "
             + "  ".join(f"{g}: {'yes' if y else 'NO'}" for g, y in ok.items())]
    return est, ok, "\n".join(lines)


def memory_explorer():
    """Sliders for model, method, batch, sequence length, LoRA rank, checkpointing, optimizer -> stacked bar + fits row.

    Returns the widget; show it with `display(cu.memory_explorer())`.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .memory import GPUS_GB, KNOWN_MODELS, METHODS, OPTIMIZERS
    from .plotting import plot_memory_breakdown

    model = w.Dropdown(options=list(KNOWN_MODELS), value="Qwen/Qwen3-8B", description="model")
    method = w.ToggleButtons(options=list(METHODS), value="qlora", description="method")
    batch = w.IntSlider(value=1, min=1, max=32, description="batch")
    seq = w.SelectionSlider(options=[256, 512, 1024, 2048, 4096, 8192], value=1024, description="seq_len")
    rank = w.SelectionSlider(options=[4, 8, 16, 32, 64, 128], value=16, description="LoRA r")
    ckpt = w.Checkbox(value=True, description="gradient checkpointing")
    opt = w.Dropdown(options=list(OPTIMIZERS), value="adamw", description="optimizer")
    out = w.Output()

    def update(*_):
        rank.disabled = method.value == "full"  # full fine-tuning has no adapters
        est, _, text = memory_explorer_report(model.value, method.value, batch.value, seq.value, rank.value,
                                              ckpt.value, opt.value)
        fig, _ = plot_memory_breakdown({method.value: est}, gpu_lines=GPUS_GB, title=model.value)
        plt.show()
        print(text)

    callback = safe_callback(out, update)
    for c in (model, method, batch, seq, rank, ckpt, opt):
        c.observe(callback, names="value")
    callback()
    row = w.Layout(flex_flow="row wrap")  # narrow screens wrap the controls instead of shrinking them
    for c in (batch, seq, rank):
        c.layout.min_width = "260px"
    return w.VBox([w.HBox([model, method], layout=row), w.HBox([batch, seq, rank], layout=row),
                   w.HBox([ckpt, opt], layout=row), out])


# ---- 11 quant_explorer ----

def quant_explorer(model=None, tokenizer=None, *, n_calibration: int = 32):
    """Layer, method, bits and group size: one linear layer of course-tiny-sft quantized, its relative weight and
    held-out output errors, and one row's float weights against the values left after quantization."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import quant
    from .data import make_sft_conversations
    from .env import REPO_ROOT
    from .models import load_model
    from .plotting import plot_weight_grid
    from .sft import build_sft_example, collate

    check_int("n_calibration", n_calibration)
    if model is None:
        model, tokenizer = load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")
    names = quant.quantized_linear_names(model)
    calib = collate([build_sft_example(tokenizer, c) for c in make_sft_conversations(n_calibration, "train", seed=5)],
                    tokenizer.pad_token_id)
    test = quant.heldout_batch(tokenizer, n_calibration)
    calib_inputs = quant.collect_linear_inputs(model, calib["input_ids"], calib["attention_mask"])
    test_inputs = quant.collect_linear_inputs(model, test["input_ids"], test["attention_mask"])
    modules = dict(model.named_modules())
    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"))  # labels never cut
    layer = w.Dropdown(options=names, value=names[-1], description="layer", **wide)
    method = w.Dropdown(options=["rtn", "gptq", "awq"], value="rtn", description="method", **wide)
    bits = w.IntSlider(value=4, min=2, max=8, description="bits", **wide)
    group = w.Dropdown(options=[("one scale per row", None), ("groups of 64", 64), ("groups of 32", 32)],
                       value=None, description="scales", **wide)
    out = w.Output()

    def update(*_):
        weight = modules[layer.value].weight.detach()
        result = quant.layer_errors(weight, calib_inputs[layer.value], test_inputs[layer.value], method.value,
                                    bits.value, group.value)
        print(f"{layer.value} {tuple(weight.shape)}, {method.value} at {bits.value} bits: relative weight error "
              f"{result['weight_error']:.4f}, relative output error on held-out tokens {result['output_error']:.4f}")
        fig, _ = plot_weight_grid(weight[0], result["w_hat"][0],
                                  title=f"row 0 of {layer.value}: float weights and the values they round to")
        plt.show()
        plt.close(fig)

    return live_rows(update, [[layer, method], [bits, group]], out)


# ---- 12 eval_size_explorer ----

def eval_size_report(n: int, p: float, gain: float, discordance: float) -> dict:
    """The numbers eval_size_explorer shows: SE and power of each design, and the problems 80 % power needs."""
    from . import stats

    designs = {"paired": dict(discordance=discordance), "unpaired": dict(p=p)}
    return {name: {"se": stats.gain_se(n, gain, **kw),
                   "power": stats.detection_power(n, gain, **kw),
                   "needed": stats.problems_needed(gain, **kw)} for name, kw in designs.items()}


def eval_size_explorer():
    """Problems, accuracy, gain and discordance: how often an evaluation shows the gain at 2 SE, paired (both
    models on the same problems) and unpaired, with the sampling distribution of the measured gain."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .plotting import plot_gain_distribution

    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"), continuous_update=False)
    n = w.IntSlider(value=500, min=50, max=20000, step=50, description="problems per model", **wide)
    p = w.FloatSlider(value=0.6, min=0.05, max=0.9, step=0.01, description="weaker model's accuracy", **wide)
    gain = w.FloatSlider(value=0.03, min=0.005, max=0.1, step=0.001, readout_format=".3f", description="true gain",
                         **wide)
    disc = w.FloatSlider(value=0.1, min=0.005, max=0.5, step=0.001, readout_format=".3f",
                         description="discordance (paired)", **wide)
    out = w.Output()

    def update(*_):
        if disc.value < gain.value:
            print(f"discordance ({disc.value:.2f}) must be at least the gain ({gain.value:.3f}): a gain needs "
                  f"problems where the models disagree")
            return
        report = eval_size_report(n.value, p.value, gain.value, disc.value)
        for name, r in report.items():
            print(f"{name:9s} SE {r['se']:.4f}  power at n = {n.value}: {r['power']:.2f}  "
                  f"problems for 80 % power: {r['needed']}")
        fig, _ = plot_gain_distribution(gain.value, {k: r["se"] for k, r in report.items()})
        plt.show()
        plt.close(fig)

    return live_rows(update, [[n, gain], [p, disc]], out)
