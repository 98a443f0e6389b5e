"""Lecture 06: memory_explorer, the training-memory calculator as a stacked bar against GPU sizes."""

from __future__ import annotations

import ipywidgets as w

from .core import live_rows, say, show


def memory_explorer_report(model: str, method: str, batch_size: int, seq_len: int, lora_r: int,
                           grad_checkpointing: bool, optimizer: str) -> tuple:
    """(MemoryBreakdown, fits dict, text) for one set of explorer settings; what the widget shows."""
    from ..memory import estimate_training_memory, fits

    est = estimate_training_memory(model, method, batch_size=batch_size, seq_len=seq_len, lora_r=lora_r,
                                   grad_checkpointing=grad_checkpointing, optimizer=optimizer)
    ok = fits(est)
    lines = [f"{model}; {method}; batch {batch_size} x {seq_len} tokens; optimizer {optimizer}"
             + (f"; r = {lora_r}" if method != "full" else "") + ("; checkpointing" if grad_checkpointing else ""),
             "GB: " + "; ".join(f"{k} {v:.1f}" for k, v in est.as_dict(1e9).items()),
             "fits (the peak, the black tick, within the GPU's memory): "
             + "; ".join(f"{g} {'yes' if y else 'NO'}" for g, y in ok.items()),
             "The bar is the sum of the parts; the peak is less because the parts never all coexist (gradients "
             "replace activations during the backward pass). overhead: the largest short-lived buffer, whichever of "
             "these is largest: the logits' buffers (they grow with batch x seq_len), one layer's recomputation "
             "under checkpointing, or the optimizer step's temporaries (large in full fine-tuning)."]
    return est, ok, "\n".join(lines)


def memory_explorer():
    """Sliders for model, method, batch, sequence length, LoRA rank, checkpointing, optimizer -> stacked bar + fits row.

    Returns the widget; show it with `display(cu.memory_explorer())`.
    """

    from ..memory import GPUS_GB, KNOWN_MODELS, METHODS, OPTIMIZERS
    from ..plotting import plot_memory_breakdown

    wide = dict(style={"description_width": "initial"}, layout=w.Layout(min_width="260px"))  # labels never cut
    model = w.Dropdown(options=list(KNOWN_MODELS), value="Qwen/Qwen3-8B", description="model", **wide)
    method = w.ToggleButtons(options=list(METHODS), value="qlora", description="method",
                             style={"description_width": "initial", "button_width": "64px"})
    batch = w.IntSlider(value=1, min=1, max=32, description="batch", **wide)
    seq = w.SelectionSlider(options=[256, 512, 1024, 2048, 4096, 8192], value=1024, description="seq_len", **wide)
    rank = w.SelectionSlider(options=[4, 8, 16, 32, 64, 128], value=16, description="LoRA r", **wide)
    ckpt = w.Checkbox(value=True, description="gradient checkpointing", indent=False)
    opt = w.Dropdown(options=list(OPTIMIZERS), value="adamw", description="optimizer", **wide)

    def update():
        rank.disabled = method.value == "full"  # full fine-tuning has no adapters
        est, _, text = memory_explorer_report(model.value, method.value, batch.value, seq.value, rank.value,
                                              ckpt.value, opt.value)
        fig, _ = plot_memory_breakdown({method.value: est}, gpu_lines=GPUS_GB, title=model.value)
        show(fig)
        *lists, prose = text.splitlines()
        for line in lists:  # settings, sizes and fits: broken between items
            say(line, sep="; ")
        say(prose)

    return live_rows(update, [[model, method], [batch, seq, rank], [ckpt, opt]])
