"""Memory calculator: parameter counts vs transformers and published totals, estimate vs measurement."""

import pytest
import torch

import course_utils as cu
from course_utils.lora import add_lora, quantize_model_nf4
from course_utils.memory import (KNOWN_MODELS, QWEN3_100M, count_params, estimate_training_memory, fits,
                                 lora_params, measure_training_memory, model_from_config)

# Totals from the model cards (Qwen3: total / non-embedding in billions; Llama: exact counts).
PUBLISHED = {
    "Qwen/Qwen3-0.6B": (0.6, 0.44), "Qwen/Qwen3-1.7B": (1.7, 1.4), "Qwen/Qwen3-4B": (4.0, 3.6),
    "Qwen/Qwen3-8B": (8.2, 6.95), "Qwen/Qwen3-14B": (14.8, 13.2), "Qwen/Qwen2.5-7B": (7.61, 6.53),
    "Qwen/Qwen2.5-0.5B": (0.49, 0.36),
}
PUBLISHED_EXACT = {"meta-llama/Llama-3.1-8B": 8_030_261_248, "meta-llama/Llama-3.2-1B": 1_235_814_400}


@pytest.mark.parametrize("name", list(KNOWN_MODELS))
def test_param_count_matches_transformers_on_meta(name):
    model = model_from_config(name, device="meta")
    ref = sum(p.numel() for p in model.parameters())  # tied weights are counted once by .parameters()
    assert count_params(name)["total"] == ref, f"{name}: ours {count_params(name)['total']} vs transformers {ref}"


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_param_count_matches_published(name):
    total, non_emb = PUBLISHED[name]
    c = count_params(name)
    for got, card in ((c["total"], total), (c["non_embedding"], non_emb)):
        digits = len(str(card).split(".")[1])  # within the last digit the model card prints
        assert abs(got / 1e9 - card) < 10 ** -digits, (got, card)


@pytest.mark.parametrize("name", list(PUBLISHED_EXACT))
def test_param_count_matches_published_exact(name):
    assert count_params(name)["total"] == PUBLISHED_EXACT[name]


def test_lora_count_qwen3_8b_by_hand():
    # r * (in + out) per linear, 36 layers: q,o 4096+4096; k,v 4096+1024; gate,up,down 4096+12288
    per_layer = 32 * (2 * 8192 + 2 * 5120 + 3 * 16384)
    assert lora_params("Qwen/Qwen3-8B", r=32) == 36 * per_layer == 87_293_952


def _build(shape, method):
    if shape == "course-tiny":
        model, _ = cu.load_model("course-tiny", device="cpu")
    else:
        model = model_from_config(shape)
    if method == "qlora":
        quantize_model_nf4(model)
    if method != "full":
        add_lora(model, "all-linear", r=8, alpha=16)
    return model


CASES = [("course-tiny", m, 2, 32) for m in ("full", "lora", "qlora")]
CASES += [pytest.param(QWEN3_100M, m, 1, 16, marks=pytest.mark.slow, id=f"qwen3-100M-{m}")
          for m in ("full", "lora", "qlora")]


@pytest.mark.parametrize("shape,method,B,T", CASES)
def test_estimate_matches_cpu_measurement(shape, method, B, T):
    torch.manual_seed(0)
    model = _build(shape, method)
    ids = torch.randint(4, 900, (B, T), generator=torch.Generator().manual_seed(1))
    meas = measure_training_memory(model, ids)
    est = estimate_training_memory(model, method, batch_size=B, seq_len=T, dtype="fp32", lora_r=8)
    assert est.n_params == meas.n_params and est.trainable_params == meas.trainable_params
    for k in ("params", "grads", "optimizer", "activations"):
        e, m = getattr(est, k), getattr(meas, k)
        assert abs(e / m - 1) < 0.05, f"{method} {k}: estimate {e} vs measured {m} ({e / m - 1:+.2%})"


def test_course_notes_qwen3_8b_table_orders():
    kw = dict(batch_size=1, seq_len=1024, grad_checkpointing=True)
    full = estimate_training_memory("Qwen/Qwen3-8B", "full", master_weights=True, **kw)
    lora = estimate_training_memory("Qwen/Qwen3-8B", "lora", lora_r=32, **kw)
    qlora = estimate_training_memory("Qwen/Qwen3-8B", "qlora", lora_r=32, **kw)
    assert full.peak > 100e9 and 15e9 < lora.peak < 25e9 and qlora.peak < 10e9
    assert full.params == 2 * count_params("Qwen/Qwen3-8B")["total"]
    assert fits(qlora)["T4 16 GB"] and not fits(full)["H100 80 GB"]


def test_bytes_per_parameter_rules_by_hand():
    """ZeRO's mixed-precision AdamW is 2 + 2 + (4 + 4 + 4) = 16 B/param; the notes' table (fp16 weights and grads,
    fp32 momentum and variance, no master copy) is 2 + 2 + 8 = 12; plain bf16 AdamW is 2 + 2 + 4 = 8."""
    n = count_params("Qwen/Qwen3-8B")["total"]
    kw = dict(batch_size=1, seq_len=16)
    for extra, per_param in ((dict(master_weights=True), 16), (dict(state_dtype="fp32"), 12), ({}, 8),
                             (dict(dtype="fp16", state_dtype="fp32"), 12)):
        b = estimate_training_memory("Qwen/Qwen3-8B", "full", **kw, **extra)
        assert b.params + b.grads + b.optimizer == per_param * n, extra


def test_zero_shards_optimizer_grads_params():
    kw = dict(batch_size=1, seq_len=512)
    one = estimate_training_memory("Qwen/Qwen3-1.7B", "full", **kw)
    z3 = estimate_training_memory("Qwen/Qwen3-1.7B", "full", zero_stage=3, n_gpus=4, **kw)
    assert z3.optimizer == one.optimizer // 4 and z3.grads == one.grads // 4 and z3.params == one.params // 4
    assert z3.activations == one.activations


def test_bad_inputs():
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_training_memory("Qwen/Qwen3-0.6B", "prefix", batch_size=1, seq_len=8)
    with pytest.raises(ValueError, match="dtype must be one of .* got 'int3'"):
        estimate_training_memory("Qwen/Qwen3-0.6B", batch_size=1, seq_len=8, dtype="int3")
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        estimate_training_memory("Qwen/Qwen3-0.6B", batch_size=1, seq_len=8, state_dtype="fp8")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        estimate_training_memory("Qwen/Qwen3-0.6B", batch_size=1, seq_len=8, optimizer="lion")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got -1"):
        estimate_training_memory("Qwen/Qwen3-0.6B", batch_size=-1, seq_len=8)
    with pytest.raises(ValueError, match="lora_r must be a positive int, got 0"):
        estimate_training_memory("Qwen/Qwen3-0.6B", "lora", batch_size=1, seq_len=8, lora_r=0)
    with pytest.raises(ValueError, match=r"unknown module names \['c_attn'\]"):
        estimate_training_memory("Qwen/Qwen3-0.6B", "lora", batch_size=1, seq_len=8, lora_targets=["c_attn"])
    with pytest.raises(ValueError, match="model_or_shape must be one of"):
        estimate_training_memory("Qwen/Qwen9-1B", batch_size=1, seq_len=8)
    with pytest.raises(ValueError, match="zero_stage must be"):
        estimate_training_memory("Qwen/Qwen3-0.6B", batch_size=1, seq_len=8, zero_stage=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("B", [1, 4])
def test_gpu_peak_within_10_percent(method, B):
    shape = dict(KNOWN_MODELS["Qwen/Qwen3-0.6B"])
    model = model_from_config(shape, dtype=torch.bfloat16, device="cuda")
    if method != "full":
        add_lora(model, "all-linear", r=16, alpha=32)
        for m in model.modules():
            if hasattr(m, "lora_A"):
                m.lora_A.to(torch.bfloat16), m.lora_B.to(torch.bfloat16)
    ids = torch.randint(10, 900, (B, 1024), device="cuda")
    meas = measure_training_memory(model, ids)
    est = estimate_training_memory(shape, method, batch_size=B, seq_len=1024, dtype="bf16", lora_r=16)
    assert abs(est.peak / meas.peak - 1) < 0.10, f"estimate {est.peak} vs max_memory_allocated {meas.peak}"


def test_memory_explorer_plot_and_report_are_consistent():
    """The widget's figure: one labelled line per GPU size, labels apart and beside the bars, legend under them; its text says the fit
    uses the peak, and the answer agrees with the bar's peak tick; LoRA r is greyed out for full fine-tuning."""
    import matplotlib.pyplot as plt

    from course_utils import widgets
    from course_utils.memory import GPUS_GB
    from course_utils.plotting import plot_memory_breakdown

    est, ok, text = widgets.memory_explorer_report("Qwen/Qwen3-8B", "full", 1, 1024, 16, True, "adamw")
    assert "fits (the peak" in text and ok == {g: est.peak <= gb * 1e9 for g, gb in GPUS_GB.items()}
    fig, ax = plot_memory_breakdown({"full": est}, gpu_lines=GPUS_GB)
    labels = {t.get_text().strip(): t.get_position()[1] for t in ax.texts if "GB" in t.get_text()}
    assert "A100 80 GB / H100 80 GB" in labels and len(labels) == len(set(GPUS_GB.values())), labels
    fig.canvas.draw()
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 < frame.y0 + 1  # the legend sits under the axes, not on a bar
    assert all(t.get_window_extent().x0 >= frame.x1 - 1 for t in ax.texts if "GB" in t.get_text())  # labels beside it
    plt.close(fig)
    for setting in [("Qwen/Qwen3-8B", "full", 1, 1024), ("Qwen/Qwen2.5-0.5B", "full", 32, 8192)]:  # small, huge y axis
        est, _, _ = widgets.memory_explorer_report(*setting, 16, False, "adamw")
        fig, ax = plot_memory_breakdown({"full": est}, gpu_lines=GPUS_GB)
        fig.tight_layout()  # as widgets.show draws it
        fig.canvas.draw()
        boxes = sorted((t.get_window_extent() for t in ax.texts if "GB" in t.get_text()), key=lambda b: b.y0)
        assert all(b.y0 - a.y1 >= 2 for a, b in zip(boxes, boxes[1:])), (setting, [(b.y0, b.y1) for b in boxes])
        plt.close(fig)
    w = widgets.memory_explorer()
    method, rank = w.children[0].children[1], w.children[1].children[2]
    method.value = "full"
    assert rank.disabled
    method.value = "lora"
    assert not rank.disabled
    plt.close("all")
