"""Faults: nothing lost. SIGKILL mid-run then resume == uninterrupted run; a kill during a save leaves the previous
checkpoint usable; CUDA OOM is answered with the memory calculator's advice; bitsandbytes missing -> NF4 fallback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import course_utils as cu
from course_utils.labs import sft as lab
from course_utils.train import TrainConfig, latest_checkpoint, load_checkpoint, save_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sft_ci.json"


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def _final_weights(out_dir: Path, steps: int) -> dict[str, torch.Tensor]:
    return load_file(out_dir / "checkpoints" / f"step_{steps:06d}" / "model.safetensors")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    cfg = lab.load_config(CONFIG, out_dir=str(tmp_path / "killed"), log_every=0)
    # 1. a run in a subprocess, killed with SIGKILL right after its first checkpoint is complete
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({**json.loads(CONFIG.read_text()), "step_delay": 0.4, "log_every": 0}))
    proc = subprocess.Popen([sys.executable, "-m", "course_utils.labs.sft", "--config", str(slow), "--out-dir",
                             cfg.out_dir, "--no-resume"], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = Path(cfg.out_dir) / "checkpoints" / f"step_{cfg.save_every:06d}" / "trainer_state.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), f"no first checkpoint (rc {proc.poll()}): {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = latest_checkpoint(Path(cfg.out_dir) / "checkpoints")
    assert killed_at is not None and int(killed_at.name[5:]) < cfg.steps, "the run finished before the kill"

    # 2. resume it (a fresh process state: other RNG state, new model object)
    torch.manual_seed(12345)
    resumed = lab.run(cfg, resume=True)
    assert resumed["resumed_from"] == int(killed_at.name[5:])

    # 3. the same run, never interrupted
    ref_cfg = lab.load_config(CONFIG, out_dir=str(tmp_path / "ref"), log_every=0)
    ref = lab.run(ref_cfg, resume=False)
    assert resumed["losses"] == ref["losses"]
    a, b = _final_weights(Path(cfg.out_dir), cfg.steps), _final_weights(Path(ref_cfg.out_dir), cfg.steps)
    assert a.keys() == b.keys()
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after resume: max_diff {max(diffs.values()):.3g}"
    print(f"resume check: killed after step {killed_at.name[5:]}, resumed, {len(a)} tensors bitwise equal")


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    import course_utils.train as T
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    opt = T.make_optimizer(model, T.TrainConfig())
    T.save_checkpoint(sys.argv[1], model, opt, 1)               # a complete checkpoint
    with torch.no_grad():
        model.weight.add_(1.0)
    real = T.save_file
    def half_then_die(tensors, path, *a, **k):                  # the machine dies half-way through a write
        real(tensors, path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    T.save_file = half_then_die
    T.save_checkpoint(sys.argv[1], model, opt, 2)               # overwrite the same folder: killed mid-save
""")


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    folder = tmp_path / "step_000001"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(folder)], cwd=ROOT, env=_env(),
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(folder.glob("*.tmp")), "the kill should have left a half-written temporary file"
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)  # the same initial weights as the first (complete) save
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()
    state = load_checkpoint(folder, model, cu.train.make_optimizer(model, TrainConfig()))
    assert state["step"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), f"{k} corrupted: max_diff {(v - expected[k]).abs().max().item():.3g}"
    assert latest_checkpoint(tmp_path) == folder


def test_cuda_oom_becomes_calculator_advice():
    model, tok = cu.load_model("course-tiny", device="cpu")
    examples = [cu.sft.build_sft_example(tok, c) for c in cu.data.make_sft_conversations(8, "train", seed=0)]
    batch_fn = cu.sft.make_batch_fn(examples, 4, tok.pad_token_id)

    def oom_loss(model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RuntimeError) as info:
        train(model, oom_loss, batch_fn, TrainConfig(steps=2, warmup=1))
    msg = str(info.value)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    for needed in ("out of memory at step 0", "memory calculator estimates", "GiB", "grad_accum",
                   "gradient checkpointing", "LoRA", "QLoRA"):
        assert needed in msg, f"{needed!r} missing from: {msg}"
    assert all(p.grad is None for p in model.parameters())


NO_BNB = textwrap.dedent("""
    import sys
    sys.modules["bitsandbytes"] = None                        # `import bitsandbytes` now raises ImportError
    import torch, course_utils as cu
    from course_utils import lora as L
    ok = cu.doctor()
    print("DOCTOR_OK", ok)
    model, tok = L.load_qlora_model("course-tiny", r=4, alpha=8)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    w = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    codes, absmax = L.quantize_nf4(w.detach())
    print("TRAINABLE", n_train, "ON_NF4_GRID", torch.equal(L.dequantize_nf4(codes, absmax, w.shape), w))
""")


def test_qlora_falls_back_without_bitsandbytes():
    proc = subprocess.run([sys.executable, "-c", NO_BNB], cwd=ROOT, env=_env(), capture_output=True, timeout=180)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    bnb_line = next(line for line in out.splitlines() if "bitsandbytes" in line and line.split()[0] in ("OK", "FAIL"))
    assert bnb_line.startswith("FAIL") and "->" in bnb_line and "make setup" in bnb_line, bnb_line
    assert "DOCTOR_OK False" in out
    assert "falls back to the pure-PyTorch NF4 path" in out
    assert "ON_NF4_GRID True" in out and "TRAINABLE 0" not in out, out
