"""Scale-out: the SFT lab script under `torchrun --nproc_per_node 2` (gloo, CPU) with the same global batch follows
one process's loss trajectory, and only rank 0 writes checkpoints. The accelerate configs parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from course_utils.labs import sft as lab

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sft_ci.json"
LOSS_TOL = 1e-4  # float rounding only: the 2-rank loss is the same token-weighted mean, summed in another order


def test_torchrun_two_ranks_match_one_process(tmp_path):
    one = lab.run(lab.load_config(CONFIG, out_dir=str(tmp_path / "one"), log_every=0), resume=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "COURSE_DDP_BACKEND": "gloo"}
    two_dir = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "course_utils.labs.sft", "--config", str(CONFIG), "--out-dir", str(two_dir),
                           "--no-resume"], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout.decode() + proc.stderr.decode())[-4000:]
    r0, r1 = (json.loads((two_dir / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2

    losses = json.loads((two_dir / "losses.json").read_text())
    assert len(losses) == len(one["losses"]) == one["config"]["steps"]
    diff = max(abs(a - b) for a, b in zip(losses, one["losses"]))
    print(f"DDP (2 ranks, gloo) vs 1 process: max loss difference {diff:.2e} over {len(losses)} steps")
    assert diff < LOSS_TOL, f"loss trajectories differ: max_diff {diff:.3g}\n{losses}\n{one['losses']}"
    assert r1["losses"] == r0["losses"]  # every rank logs the global (all-reduced) loss

    # one writer: rank 0 wrote every checkpoint, rank 1 none, and nothing else is on disk
    ckpts = sorted(p.name for p in (two_dir / "checkpoints").iterdir())
    assert r1["saved"] == [] and [Path(p).name for p in r0["saved"]] == ckpts == sorted(
        p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert not list((two_dir / "checkpoints").rglob("*.tmp"))
    a = load_file(two_dir / "checkpoints" / ckpts[-1] / "model.safetensors")
    b = load_file(tmp_path / "one" / "checkpoints" / ckpts[-1] / "model.safetensors")
    wdiff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"final weights max difference {wdiff:.2e}")
    assert wdiff < 1e-4, f"final weights differ: max_diff {wdiff:.3g}"


def test_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 3, "batch": 4}))
    with pytest.raises(ValueError, match=r"unknown keys \['batch'\]"):
        lab.load_config(bad)
    with pytest.raises(ValueError, match="global_batch_size must be a positive int"):
        lab.load_config(None, global_batch_size=0)


def test_batch_must_split_over_ranks(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "init_distributed", lambda: (0, 3))
    with pytest.raises(ValueError, match="global_batch_size=8 must be divisible by world_size x grad_accum = 3 x 1"):
        lab.run(lab.load_config(CONFIG, out_dir=str(tmp_path)))


def test_fsdp_and_deepspeed_launch_is_refused_with_a_pointer(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match="configs/accelerate/README.md"):
        lab.init_distributed()


@pytest.mark.parametrize("name,kind,n", [("single_gpu", "NO", 1), ("multi_gpu_ddp", "MULTI_GPU", 2),
                                         ("fsdp", "FSDP", 2), ("deepspeed_zero2", "DEEPSPEED", 2),
                                         ("deepspeed_zero3", "DEEPSPEED", 2)])
def test_accelerate_configs_parse(name, kind, n):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.name == kind and cfg.num_processes == n
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
