"""Bad input, swept: every public course_utils function (DESIGN.md section 3) rejects wrong types, out-of-range
numbers, mismatched shapes, empty inputs and NaN logits with a ValueError/TypeError that names the argument.
Widgets: every control driven to its extremes raises nothing.

Each row is (function, bad call, the argument name the message must contain). Functions not written yet are
skipped by name (listed in the summary test), never silently passed.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import course_utils as cu

NAN = float("nan")
INF = float("inf")


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fn(module: str, name: str):
    """The public function module.name, or None when that module/function does not exist yet."""
    try:
        mod = importlib.import_module(f"course_utils.{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


_TINY = {}


def tiny():
    """course-tiny on CPU, loaded once for the rows that need a model."""
    if not _TINY:
        _TINY["mt"] = cu.load_model("course-tiny", device="cpu")
    return _TINY["mt"]


def model():
    return tiny()[0]


def tok():
    return tiny()[1]


q4 = lambda: _g(1, 2, 5, 8)  # noqa: E731  (B, H, T, D)
ids = lambda: torch.tensor([[5, 6, 7, 8]])  # noqa: E731
nan_logits = lambda: torch.tensor([[0.0, NAN, 1.0]])  # noqa: E731
msgs = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]

# (module, function, case label, call(f), argument named in the message)
CASES = [
    # env
    ("env", "profile", "unknown name", lambda f: f("huge"), "name"),
    ("env", "profile", "wrong type", lambda f: f(3), "name"),
    ("env", "seed_everything", "negative", lambda f: f(-1), "seed"),
    ("env", "seed_everything", "float", lambda f: f(1.5), "seed"),
    ("env", "seed_everything", "string", lambda f: f("0"), "seed"),
    # models
    ("models", "load_model", "unknown name", lambda f: f("no-such-model", device="cpu"), "name"),
    ("models", "load_model", "wrong type", lambda f: f(42, device="cpu"), "name"),
    ("models", "load_model", "bad dtype", lambda f: f("course-tiny", device="cpu", dtype="float32"), "dtype"),
    ("models", "load_model", "bad attn", lambda f: f("course-tiny", device="cpu", attn_implementation="magic"),
     "attn_implementation"),
    # attention
    ("attention", "scaled_dot_product_attention", "k shape", lambda f: f(q4(), _g(1, 2, 5, 7), _g(1, 2, 5, 8)), "k"),
    ("attention", "scaled_dot_product_attention", "v length", lambda f: f(q4(), q4(), _g(1, 2, 4, 8)), "v"),
    ("attention", "scaled_dot_product_attention", "mask shape",
     lambda f: f(q4(), q4(), q4(), mask=torch.ones(3, 3, dtype=torch.bool)), "mask"),
    ("attention", "scaled_dot_product_attention", "mask dtype", lambda f: f(q4(), q4(), q4(), mask=torch.ones(5, 5)),
     "mask"),
    ("attention", "scaled_dot_product_attention", "scale <= 0", lambda f: f(q4(), q4(), q4(), scale=-1.0), "scale"),
    ("attention", "scaled_dot_product_attention", "q not tensor", lambda f: f([1.0], q4(), q4()), "q"),
    ("attention", "causal_mask", "zero", lambda f: f(0), "T"),
    ("attention", "causal_mask", "float", lambda f: f(2.5), "T"),
    ("attention", "sliding_window_mask", "window 0", lambda f: f(4, 0), "window"),
    ("attention", "sliding_window_mask", "T negative", lambda f: f(-4, 2), "T"),
    ("attention", "padding_mask", "length > T", lambda f: f([3, 9], 5), "lengths"),
    ("attention", "padding_mask", "negative length", lambda f: f([-1, 2], 5), "lengths"),
    ("attention", "padding_mask", "empty", lambda f: f([], 5), "lengths"),
    ("attention", "repeat_kv", "n_rep 0", lambda f: f(q4(), 0), "n_rep"),
    ("attention", "repeat_kv", "3-D x", lambda f: f(_g(2, 5, 8), 2), "x"),
    ("attention", "Attention", "heads do not divide", lambda f: f(30, 4), "n_heads"),
    ("attention", "Attention", "kv heads do not divide", lambda f: f(32, 4, 3), "n_kv_heads"),
    ("attention", "Attention", "d_model 0", lambda f: f(0, 4), "d_model"),
    ("attention", "attention_entropy", "integer weights", lambda f: f(torch.ones(2, 3, dtype=torch.long)), "weights"),
    ("attention", "attention_entropy", "negative weights", lambda f: f(torch.tensor([[1.5, -0.5]])), "weights"),
    ("attention", "kv_cache_bytes", "negative layers", lambda f: f(-1, 2, 64, 128), "n_layers"),
    ("attention", "kv_cache_bytes", "seq_len float", lambda f: f(4, 2, 64, 12.5), "seq_len"),
    ("attention", "kv_cache_bytes", "bytes 0", lambda f: f(4, 2, 64, 128, bytes_per_value=0), "bytes_per_value"),
    ("attention", "online_softmax", "block 0", lambda f: f(_g(2, 8), block_size=0), "block_size"),
    ("attention", "online_softmax", "empty", lambda f: f(torch.empty(2, 0)), "x"),
    ("attention", "tiled_attention", "block_q 0", lambda f: f(q4(), q4(), q4(), block_q=0), "block_q"),
    ("attention", "tiled_attention", "k shape", lambda f: f(q4(), _g(1, 2, 5, 7), q4()), "k"),
    # norms
    ("norms", "LayerNorm", "d 0", lambda f: f(0), "d"),
    ("norms", "LayerNorm", "eps negative", lambda f: f(8, eps=-1e-5), "eps"),
    ("norms", "RMSNorm", "d float", lambda f: f(8.5), "d"),
    ("norms", "RMSNorm", "eps nan", lambda f: f(8, eps=NAN), "eps"),
    ("norms", "SwiGLUMLP", "d_ff 0", lambda f: f(8, 0), "d_ff"),
    ("norms", "Block", "norm_position", lambda f: f(32, 4, norm_position="middle"), "norm_position"),
    ("norms", "Block", "norm", lambda f: f(32, 4, norm="batch"), "norm"),
    ("norms", "Block", "heads do not divide", lambda f: f(30, 4), "n_heads"),
    # positional
    ("positional", "sinusoidal_positions", "odd d", lambda f: f(8, 7), "d"),
    ("positional", "sinusoidal_positions", "T 0", lambda f: f(0, 8), "T"),
    ("positional", "alibi_slopes", "0 heads", lambda f: f(0), "n_heads"),
    ("positional", "alibi_bias", "T 0", lambda f: f(4, 0), "T"),
    ("positional", "rope_inv_freq", "odd head_dim", lambda f: f(7), "head_dim"),
    ("positional", "rope_inv_freq", "base <= 1", lambda f: f(8, base=0.5), "base"),
    ("positional", "rope_inv_freq", "unknown rope_type", lambda f: f(8, scaling={"rope_type": "wild", "factor": 2.0}),
     "rope_type"),
    ("positional", "rope_inv_freq", "factor < 1", lambda f: f(8, scaling={"rope_type": "linear", "factor": 0.5}),
     "factor"),
    ("positional", "rope_inv_freq", "scaling not dict", lambda f: f(8, scaling=2.0), "scaling"),
    ("positional", "apply_rope", "positions length", lambda f: f(_g(1, 2, 5, 8), torch.arange(4), torch.ones(4)),
     "positions"),
    ("positional", "apply_rope", "inv_freq size", lambda f: f(_g(1, 2, 5, 8), torch.arange(5), torch.ones(3)),
     "inv_freq"),
    # moe
    ("moe", "TopKRouter", "top_k > n_experts", lambda f: f(8, 4, 5), "top_k"),
    ("moe", "TopKRouter", "negative noise", lambda f: f(8, 4, 2, noise_std=-0.1), "noise_std"),
    ("moe", "MoE", "capacity 0", lambda f: f(8, 16, 4, 2, capacity_factor=0.0), "capacity_factor"),
    ("moe", "MoE", "n_experts 0", lambda f: f(8, 16, 0, 1), "n_experts"),
    ("moe", "load_balancing_loss", "wrong last dim", lambda f: f(_g(6, 5), 4, 2), "router_logits"),
    ("moe", "load_balancing_loss", "top_k 0", lambda f: f(_g(6, 4), 4, 0), "top_k"),
    ("moe", "load_balancing_loss", "empty", lambda f: f(torch.empty(0, 4), 4, 2), "router_logits"),
    # decoding
    ("decoding", "apply_temperature", "t 0", lambda f: f(_g(1, 5), 0.0), "t"),
    ("decoding", "apply_temperature", "t nan", lambda f: f(_g(1, 5), NAN), "t"),
    ("decoding", "apply_temperature", "NaN logits", lambda f: f(nan_logits(), 1.0), "logits"),
    ("decoding", "top_k_filter", "k negative", lambda f: f(_g(1, 5), -1), "k"),
    ("decoding", "top_k_filter", "k float", lambda f: f(_g(1, 5), 2.5), "k"),
    ("decoding", "top_p_filter", "p 1.5", lambda f: f(_g(1, 5), 1.5), "p"),
    ("decoding", "top_p_filter", "p 0", lambda f: f(_g(1, 5), 0.0), "p"),
    ("decoding", "top_p_filter", "NaN logits", lambda f: f(nan_logits(), 0.9), "logits"),
    ("decoding", "min_p_filter", "p negative", lambda f: f(_g(1, 5), -0.1), "p"),
    ("decoding", "min_p_filter", "p > 1", lambda f: f(_g(1, 5), 1.1), "p"),
    ("decoding", "apply_repetition_penalty", "penalty 0", lambda f: f(_g(1, 10), ids(), 0.0), "penalty"),
    ("decoding", "apply_repetition_penalty", "ids out of vocab", lambda f: f(_g(1, 5), ids(), 1.2), "input_ids"),
    ("decoding", "apply_repetition_penalty", "batch mismatch", lambda f: f(_g(2, 10), ids(), 1.2), "input_ids"),
    ("decoding", "ban_repeated_ngrams", "n 0", lambda f: f(_g(1, 10), ids(), 0), "n"),
    ("decoding", "ban_repeated_ngrams", "float ids", lambda f: f(_g(1, 10), ids().float(), 2), "input_ids"),
    ("decoding", "sample_next_token", "NaN logits", lambda f: f(nan_logits()), "logits"),
    ("decoding", "sample_next_token", "temperature negative", lambda f: f(_g(1, 5), temperature=-1.0), "temperature"),
    ("decoding", "sample_next_token", "top_p 2", lambda f: f(_g(1, 5), top_p=2.0), "top_p"),
    ("decoding", "sample_next_token", "top_k negative", lambda f: f(_g(1, 5), top_k=-3), "top_k"),
    ("decoding", "sample_next_token", "generator wrong type", lambda f: f(_g(1, 5), generator=0), "generator"),
    ("decoding", "sample_next_token", "empty vocab", lambda f: f(torch.empty(1, 0)), "logits"),
    ("decoding", "generate", "unknown strategy", lambda f: f(model(), ids(), 3, strategy="nucleus"), "strategy"),
    ("decoding", "generate", "max_new_tokens negative", lambda f: f(model(), ids(), -1), "max_new_tokens"),
    ("decoding", "generate", "1-D input_ids", lambda f: f(model(), torch.tensor([5, 6]), 3), "input_ids"),
    ("decoding", "generate", "empty prompt", lambda f: f(model(), torch.empty(1, 0, dtype=torch.long), 3), "input_ids"),
    ("decoding", "generate", "top_p 0", lambda f: f(model(), ids(), 3, strategy="sample", top_p=0.0), "top_p"),
    ("decoding", "beam_search", "num_beams 0", lambda f: f(model(), ids(), 0, 3), "num_beams"),
    ("decoding", "beam_search", "return > beams", lambda f: f(model(), ids(), 2, 3, num_return_sequences=3),
     "num_return_sequences"),
    # lora
    ("lora", "LoRALinear", "r 0", lambda f: f(torch.nn.Linear(8, 8), 0, 16), "r"),
    ("lora", "LoRALinear", "not Linear", lambda f: f(torch.nn.ReLU(), 4, 8), "base"),
    ("lora", "LoRALinear", "dropout 1", lambda f: f(torch.nn.Linear(8, 8), 4, 8, dropout=1.0), "dropout"),
    ("lora", "LoRALinear", "alpha nan", lambda f: f(torch.nn.Linear(8, 8), 4, NAN), "alpha"),
    ("lora", "add_lora", "no module matches", lambda f: f(torch.nn.Sequential(torch.nn.Linear(4, 4)), ["q_proj"], 2, 4),
     "target_modules"),
    ("lora", "add_lora", "r negative", lambda f: f(torch.nn.Sequential(torch.nn.Linear(4, 4)), "all-linear", -2, 4), "r"),
    ("lora", "merge_lora", "not a module", lambda f: f("model"), "model"),
    ("lora", "nf4_codebook", "offset > 1", lambda f: f(1.5), "offset"),
    ("lora", "quantize_nf4", "blocksize does not divide", lambda f: f(_g(10), blocksize=64), "blocksize"),
    ("lora", "quantize_nf4", "blocksize 0", lambda f: f(_g(64), blocksize=0), "blocksize"),
    ("lora", "quantize_nf4", "NaN weights", lambda f: f(torch.full((64,), NAN)), "w"),
    ("lora", "quantize_nf4", "empty", lambda f: f(torch.empty(0)), "w"),
    ("lora", "dequantize_nf4", "shape mismatch",
     lambda f: f(torch.zeros(64, dtype=torch.uint8), torch.ones(1), (4, 4)), "shape"),
    ("lora", "dequantize_nf4", "absmax count", lambda f: f(torch.zeros(64, dtype=torch.uint8), torch.ones(3), (64,)),
     "absmax"),
    # memory
    ("memory", "estimate_training_memory", "unknown model", lambda f: f("no/such-model", batch_size=1, seq_len=8),
     "model_or_shape"),
    ("memory", "estimate_training_memory", "unknown method",
     lambda f: f("Qwen/Qwen3-8B", "prefix", batch_size=1, seq_len=8), "method"),
    ("memory", "estimate_training_memory", "batch 0", lambda f: f("Qwen/Qwen3-8B", batch_size=0, seq_len=8), "batch_size"),
    ("memory", "estimate_training_memory", "seq_len float",
     lambda f: f("Qwen/Qwen3-8B", batch_size=1, seq_len=8.5), "seq_len"),
    ("memory", "estimate_training_memory", "dtype", lambda f: f("Qwen/Qwen3-8B", batch_size=1, seq_len=8, dtype="fp13"),
     "dtype"),
    ("memory", "estimate_training_memory", "optimizer",
     lambda f: f("Qwen/Qwen3-8B", batch_size=1, seq_len=8, optimizer="lion9"), "optimizer"),
    ("memory", "estimate_training_memory", "lora_r 0",
     lambda f: f("Qwen/Qwen3-8B", "lora", batch_size=1, seq_len=8, lora_r=0), "lora_r"),
    ("memory", "estimate_training_memory", "zero_stage 4",
     lambda f: f("Qwen/Qwen3-8B", batch_size=1, seq_len=8, zero_stage=4), "zero_stage"),
    ("memory", "estimate_training_memory", "n_gpus 0", lambda f: f("Qwen/Qwen3-8B", batch_size=1, seq_len=8, n_gpus=0),
     "n_gpus"),
    ("memory", "measure_training_memory", "not a module", lambda f: f("model", ids()), "model"),
    ("memory", "measure_training_memory", "optimizer", lambda f: f(model(), ids(), optimizer="sgd9"), "optimizer"),
    # sft
    ("sft", "build_sft_example", "empty messages", lambda f: f(tok(), []), "messages"),
    ("sft", "build_sft_example", "no assistant turn", lambda f: f(tok(), msgs[:1]), "messages"),
    ("sft", "build_sft_example", "message not dict", lambda f: f(tok(), ["hi"]), "messages"),
    ("sft", "build_sft_example", "max_length 1", lambda f: f(tok(), msgs, max_length=1), "max_length"),
    ("sft", "sft_loss", "shape mismatch", lambda f: f(_g(2, 5, 7), torch.zeros(2, 4, dtype=torch.long)), "labels"),
    ("sft", "sft_loss", "2-D logits", lambda f: f(_g(5, 7), torch.zeros(1, 5, dtype=torch.long)), "logits"),
    ("sft", "sft_loss", "all ignored", lambda f: f(_g(1, 5, 7), torch.full((1, 5), -100)), "labels"),
    ("sft", "sft_loss", "label >= V", lambda f: f(_g(1, 5, 7), torch.full((1, 5), 9)), "labels"),
    ("sft", "sft_loss", "float labels", lambda f: f(_g(1, 5, 7), torch.zeros(1, 5)), "labels"),
    # dpo
    ("dpo", "dpo_loss", "shape mismatch", lambda f: f(_g(4), _g(3), _g(4), _g(4)), "policy_rejected_logps"),
    ("dpo", "dpo_loss", "beta 0", lambda f: f(_g(4), _g(4), _g(4), _g(4), beta=0.0), "beta"),
    ("dpo", "dpo_loss", "beta nan", lambda f: f(_g(4), _g(4), _g(4), _g(4), beta=NAN), "beta"),
    ("dpo", "dpo_loss", "list input", lambda f: f([0.1], _g(1), _g(1), _g(1)), "policy_chosen_logps"),
    ("dpo", "simpo_loss", "beta negative", lambda f: f(_g(4), _g(4), beta=-1.0), "beta"),
    ("dpo", "simpo_loss", "shape mismatch", lambda f: f(_g(4), _g(2)), "rejected_avg_logps"),
    ("dpo", "sequence_logprobs", "mask shape",
     lambda f: f(model(), ids(), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 4)), "attention_mask"),
    ("dpo", "sequence_logprobs", "1-D ids",
     lambda f: f(model(), torch.tensor([5, 6]), torch.ones(2), torch.ones(2)), "input_ids"),
    # grpo
    ("reward_model", "bradley_terry_loss", "shape mismatch", lambda f: f(_g(4), _g(3)), "chosen_rewards"),
    ("reward_model", "bradley_terry_loss", "list input", lambda f: f([0.1], _g(1)), "chosen_rewards"),
    ("reward_model", "bradley_terry_loss", "2-D rewards", lambda f: f(_g(2, 2), _g(2, 2)), "chosen_rewards"),
    ("ppo", "gae", "shape mismatch", lambda f: f(_g(2, 3), _g(2, 4)), "rewards, values"),
    ("ppo", "gae", "1-D rewards", lambda f: f(_g(3), _g(3)), "rewards"),
    ("ppo", "gae", "lam 1.5", lambda f: f(_g(2, 3), _g(2, 3), 1.0, 1.5), "lam"),
    ("ppo", "gae", "gamma nan", lambda f: f(_g(2, 3), _g(2, 3), NAN), "gamma"),
    ("ppo", "rloo_advantages", "not divisible", lambda f: f(_g(7), 4), "group_size"),
    ("ppo", "rloo_advantages", "group_size 1", lambda f: f(_g(8), 1), "group_size"),
    ("ppo", "rloo_advantages", "NaN rewards", lambda f: f(torch.tensor([1.0, NAN]), 2), "rewards"),
    ("ppo", "rloo_advantages", "empty", lambda f: f(torch.empty(0), 2), "rewards"),
    ("grpo", "group_advantages", "not divisible", lambda f: f(_g(7), 4), "group_size"),
    ("grpo", "group_advantages", "group_size 0", lambda f: f(_g(8), 0), "group_size"),
    ("grpo", "group_advantages", "NaN rewards", lambda f: f(torch.tensor([1.0, NAN]), 2), "rewards"),
    ("grpo", "group_advantages", "empty", lambda f: f(torch.empty(0), 2), "rewards"),
    ("grpo", "grpo_loss", "unknown loss_type",
     lambda f: f(_g(2, 3), None, None, _g(2), torch.ones(2, 3), loss_type="ppo9", beta=0.0), "loss_type"),
    ("grpo", "grpo_loss", "clip_eps negative",
     lambda f: f(_g(2, 3), None, None, _g(2), torch.ones(2, 3), clip_eps=-0.1, beta=0.0), "clip_eps"),
    ("grpo", "grpo_loss", "advantages size", lambda f: f(_g(2, 3), None, None, _g(3), torch.ones(2, 3), beta=0.0), "advantages"),
    ("grpo", "grpo_loss", "mask shape", lambda f: f(_g(2, 3), None, None, _g(2), torch.ones(2, 4), beta=0.0), "completion_mask"),
    ("grpo", "grpo_loss", "beta negative", lambda f: f(_g(2, 3), None, _g(2, 3), _g(2), torch.ones(2, 3), beta=-1.0),
     "beta"),
    # widgets
    ("widgets", "decoding_explorer", "empty prompt", lambda f: f(model(), tok(), ""), "prompt"),
    ("widgets", "decoding_explorer", "max_new_tokens 0", lambda f: f(model(), tok(), "Once", max_new_tokens=0),
     "max_new_tokens"),
    ("widgets", "attention_explorer", "text not str", lambda f: f(model(), tok(), 42), "text"),
    ("widgets", "attention_explorer", "max_tokens 0", lambda f: f(model(), tok(), "Once", max_tokens=0), "max_tokens"),
    ("widgets", "rag_explorer", "world_seed -1", lambda f: f(model(), tok(), None, None, world_seed=-1), "world_seed"),
    # lecture 13
    ("rag", "make_world", "seed -1", lambda f: f(-1), "seed"),
    ("rag", "retrieve", "k 0", lambda f: f(cu.rag.BM25(["a b", "c"]), "a", 0), "k"),
    ("rag", "BM25", "b 2", lambda f: f(["a b"], b=2.0), "b"),
    ("ssm", "ssm_state_bytes", "d_state 0", lambda f: f(2, 64, d_state=0), "d_state"),
    ("editing", "rome_update", "k wrong size", lambda f: f(_g(4, 6), torch.eye(6), _g(5), _g(4)), "k"),
]

def _values(case):
    return case.values if hasattr(case, "values") else case  # a pytest.param row (known gap) or a plain tuple


PRESENT = [c for c in CASES if _fn(*_values(c)[:2]) is not None]
MISSING = sorted({"{}.{}".format(*_values(c)[:2]) for c in CASES} - {"{}.{}".format(*_values(c)[:2]) for c in PRESENT})


@pytest.mark.parametrize("module,name,label,call,arg", PRESENT,
                         ids=["{}.{}-{}".format(*_values(c)[:3]) for c in PRESENT])
def test_bad_input_is_rejected_by_name(module, name, label, call, arg):
    fn = _fn(module, name)
    with pytest.raises((ValueError, TypeError)) as info:
        call(fn)
    assert arg in str(info.value), f"{module}.{name} ({label}): message does not name {arg!r}: {info.value}"


def test_sweep_covers_the_contract():
    """Every module of DESIGN.md section 3 has rows, and each present function is swept at least once."""
    swept = {"{}.{}".format(*_values(c)[:2]) for c in PRESENT}
    modules = {_values(c)[0] for c in PRESENT}
    for mod in ("env", "models", "attention", "norms", "positional", "moe", "decoding", "lora", "memory", "sft",
                "widgets"):
        assert mod in modules, f"no bad-input rows ran for course_utils.{mod}"
    assert len(swept) >= 50 and len(PRESENT) >= 120, (len(swept), len(PRESENT), MISSING)
    print(f"swept {len(swept)} functions with {len(PRESENT)} bad inputs; not present yet: {MISSING}")


# ---- widgets: every control to its extremes ------------------------------------------------------

def _extremes(w):
    """The values to drive one ipywidgets control to: its ends (and middle), or every option."""
    import ipywidgets as W

    if isinstance(w, (W.FloatLogSlider,)):
        return [w.base ** w.min, w.base ** w.max, w.value]
    if isinstance(w, (W.IntSlider, W.FloatSlider)):
        return [w.min, w.max, w.value]
    if isinstance(w, (W.SelectionSlider, W.Dropdown, W.ToggleButtons)):
        return [o[1] if isinstance(o, tuple) else o for o in w.options]
    if isinstance(w, W.Checkbox):
        return [not w.value, w.value]
    if isinstance(w, W.Text):
        return ["", "x", "Once upon a time " * 40, w.value]
    return []


def _controls(box):
    import ipywidgets as W

    from course_utils.widgets import View

    out = []
    for child in getattr(box, "children", ()):
        if isinstance(child, View):
            continue
        out += _controls(child) if isinstance(child, W.Box) else [child]
    return out


def _drive(widget, monkeypatch) -> int:
    """Set every control to each extreme; return how many settings were tried. None may end in an error message,
    and no figure may hold a title where its fixed height (`new_figure` in a widget) would meet a y-axis offset
    ("1e6") or an x axis on top, which matplotlib's automatic placement would have moved it above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils.widgets import core

    drawn = []
    label_ticks = core.plain_text_ticks  # `show` calls it on every figure it draws
    monkeypatch.setattr(core, "plain_text_ticks", lambda fig: (drawn.append(fig), label_ticks(fig)))
    n = 0
    for control in _controls(widget):
        for value in _extremes(control):
            control.value = value  # the observer runs the callback synchronously
            n += 1
            shown = widget.view.shown_text()
            assert "Could not update" not in shown, f"{control.description} = {value!r}: {shown}"
        plt.close("all")
    assert drawn
    for ax in (ax for fig in drawn for ax in fig.axes if ax.get_title()):
        assert not ax.yaxis.offsetText.get_text(), f"{ax.get_title()!r} over a y offset"
        on_top = ax.xaxis.get_ticks_position() in ("top", "unknown") or ax.xaxis.get_label_position() == "top"
        assert not on_top, f"{ax.get_title()!r} over an x axis on top"  # matplotlib's own test for moving a title
    return n


@pytest.mark.parametrize("which", ["decoding_explorer", "attention_explorer", "memory_explorer", "rope_explorer",
                                   "moe_explorer", "quant_explorer", "eval_size_explorer", "norm_explorer",
                                   "rag_explorer"])
def test_widget_controls_at_extremes(which, monkeypatch):
    from course_utils import widgets

    fn = getattr(widgets, which, None)
    assert fn is not None, f"widgets.{which} is missing"
    if which in ("memory_explorer", "rope_explorer", "moe_explorer", "eval_size_explorer"):
        w = fn()
    elif which == "quant_explorer":
        w = fn(n_calibration=4)
    elif which == "norm_explorer":
        w = fn(torch.randint(0, 50, (2, 8)), 50, depths=(2, 4), embed_stds=(0.02, 1.0))
    elif which == "attention_explorer":
        m, t = cu.load_model("course-tiny", device="cpu", attn_implementation="eager")
        w = fn(m, t, "Once upon a time")
    elif which == "rag_explorer":
        w = fn(model(), tok(), *cu.load_model("minilm", device="cpu"), world_seed=3)
    else:
        w = fn(model(), tok(), "Once upon a time", max_new_tokens=3)
    assert _drive(w, monkeypatch) >= 5
