"""The DPO, GRPO and RLHF labs as scripts (`python -m course_utils.labs.dpo|grpo|rlhf --config configs/*_ci.json`): each runs end
to end in a subprocess, writes safetensors checkpoints, and a rerun resumes from the latest one and ends where an
uninterrupted run ends (same losses, same weights: the reference model is the starting policy, not the checkpoint).
The DPO script under `torchrun --nproc_per_node 2` (gloo) follows one process's loss trajectory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from course_utils.labs import dpo as dpo_lab
from course_utils.labs import grpo as grpo_lab
from course_utils.labs import rlhf as rlhf_lab

ROOT = Path(__file__).resolve().parents[1]
LABS = {"dpo": (dpo_lab, ROOT / "configs" / "dpo_ci.json"), "grpo": (grpo_lab, ROOT / "configs" / "grpo_ci.json"),
        "rlhf": (rlhf_lab, ROOT / "configs" / "rlhf_ci.json")}
WEIGHT_TOL = 1e-5  # same process settings (1 thread): equal up to float noise, as notebook 09's resume check


def _script(name: str, config: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", f"course_utils.labs.{name}", "--config", str(config), *args],
                          cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout.decode() + proc.stderr.decode())[-4000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])  # the summary line


def _losses(name: str, out: Path) -> list[float]:
    if name == "dpo":
        return json.loads((out / "losses.json").read_text())
    key = "policy_loss" if name == "rlhf" else "loss"
    return [h[key] for h in json.loads((out / "history.json").read_text()) if key in h]


@pytest.mark.parametrize("name", ["dpo", "grpo"])
def test_script_runs_checkpoints_and_resumes(name, tmp_path):
    lab, config = LABS[name]
    steps = json.loads(config.read_text())["steps"]
    out = tmp_path / "run"
    # 1. interrupted after 2 steps: a complete safetensors checkpoint at step 2
    first = _script(name, config, "--out-dir", str(out), "--no-resume", "--stop-at", "2")
    assert first["step"] == 2 and first["resumed_from"] is None, first
    ckpt = out / "checkpoints" / "step_000002"
    assert (ckpt / "trainer_state.json").exists() and json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2
    tensors = load_file(ckpt / "model.safetensors")
    assert any(k.endswith("q_proj.weight") for k in tensors) and not list(out.rglob("*.tmp"))
    losses_2 = _losses(name, out)
    assert len(losses_2) == 2 and all(map(lambda x: x == x, losses_2)), losses_2  # finite, not NaN

    # 2. rerun: resumes from step 2 and finishes
    second = _script(name, config, "--out-dir", str(out))
    assert second["resumed_from"] == 2 and second["step"] == steps, second
    resumed_losses = _losses(name, out)
    assert len(resumed_losses) == steps and resumed_losses[:2] == losses_2
    final = load_file(out / "checkpoints" / f"step_{steps:06d}" / "model.safetensors")
    moved = max((final[k] - tensors[k]).abs().max().item() for k in tensors)
    assert moved > 0, "the resumed steps did not change the weights"

    # 3. the same run uninterrupted, in this process: same losses and weights
    ref = lab.run(lab.load_config(config, out_dir=str(tmp_path / "ref"), log_every=0), resume=False)
    ref_losses = _losses(name, tmp_path / "ref")
    loss_diff = max(abs(a - b) for a, b in zip(resumed_losses, ref_losses))
    ref_final = load_file(tmp_path / "ref" / "checkpoints" / f"step_{steps:06d}" / "model.safetensors")
    wdiff = max((final[k] - ref_final[k]).abs().max().item() for k in final)
    print(f"{name}: resumed at step 2 of {steps}; vs uninterrupted: max loss diff {loss_diff:.1e}, max weight diff {wdiff:.1e}")
    assert ref["step"] == steps and len(ref_losses) == steps
    assert loss_diff < WEIGHT_TOL and wdiff < WEIGHT_TOL, f"max_diff loss {loss_diff:.3g}, weights {wdiff:.3g}"


def test_rlhf_script_checkpoints_resumes_and_reuses_its_reward_model(tmp_path, capsys):
    """The RLHF lab's command line in this process (its startup is the same code as the other labs'): stopped after
    round 2, rerun, it reloads the saved reward model and resumes; losses and weights equal an uninterrupted run."""
    config = LABS["rlhf"][1]
    steps = json.loads(config.read_text())["steps"]
    out = tmp_path / "run"
    rlhf_lab.main(["--config", str(config), "--out-dir", str(out), "--no-resume", "--stop-at", "2"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 2 and first["rm_accuracy"] is not None and (out / "reward_model" / "config.json").exists()
    rlhf_lab.main(["--config", str(config), "--out-dir", str(out)])
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["resumed_from"] == 2 and second["step"] == steps and second["rm_accuracy"] is None, second  # reloaded
    ref = rlhf_lab.run(rlhf_lab.load_config(config, out_dir=str(tmp_path / "ref"), log_every=0), resume=False)
    assert _losses("rlhf", out) == _losses("rlhf", tmp_path / "ref") and ref["step"] == steps
    final = load_file(out / "checkpoints" / f"step_{steps:06d}" / "model.safetensors")
    ref_final = load_file(tmp_path / "ref" / "checkpoints" / f"step_{steps:06d}" / "model.safetensors")
    assert any(k.startswith("critic.") for k in final)  # the critic is in the checkpoint too
    wdiff = max((final[k] - ref_final[k]).abs().max().item() for k in final)
    assert wdiff < WEIGHT_TOL, f"max weight diff {wdiff:.3g}"


def test_configs_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 3, "batch": 4}))
    for lab, _ in LABS.values():
        with pytest.raises(ValueError, match=r"unknown keys \['batch'\]"):
            lab.load_config(bad)
    with pytest.raises(ValueError, match="method must be one of"):
        dpo_lab.load_config(None, method="ppo")
    with pytest.raises(ValueError, match="global_batch_size must be a positive int"):
        dpo_lab.load_config(None, global_batch_size=0)
    with pytest.raises(ValueError, match="n_pairs, n_sampled and n_policy are all 0"):
        dpo_lab.load_config(None, n_pairs=0)
    with pytest.raises(ValueError, match="families must be a non-empty list"):
        grpo_lab.load_config(None, families=["algebra"])
    with pytest.raises(ValueError, match="cfg.group_size must be an int >= 2"):
        grpo_lab.load_config(None, group_size=1)
    with pytest.raises(ValueError, match="cfg.group_size must be an int >= 2"):
        rlhf_lab.load_config(None, algorithm="rloo", group_size=1)
    with pytest.raises(ValueError, match="label_noise"):
        rlhf_lab.load_config(None, label_noise=0.9)
    for name, (lab, _) in LABS.items():  # the GPU variants parse too
        assert lab.load_config(ROOT / "configs" / f"{name}_gpu.json").device == "auto"


def test_dpo_batch_splits_pairs_over_ranks(monkeypatch):
    """Each rank gets matching chosen/rejected rows; together the ranks hold the whole global batch."""
    ids = torch.arange(8 * 3).reshape(8, 3)  # 4 pairs: chosen rows 0-3, rejected rows 4-7
    full = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": torch.ones_like(ids).bool()}
    shards = [dpo_lab.shard_pairs(lambda step: full, r, 2)(0)["input_ids"] for r in range(2)]
    assert torch.equal(shards[0], ids[[0, 1, 4, 5]]) and torch.equal(shards[1], ids[[2, 3, 6, 7]])
    monkeypatch.setattr(dpo_lab, "init_distributed", lambda: (0, 3))
    with pytest.raises(ValueError, match="global_batch_size=4 must be divisible by world_size x grad_accum = 3 x 1"):
        dpo_lab.run(dpo_lab.load_config(LABS["dpo"][1]), resume=False)


def test_grpo_script_refuses_several_processes(monkeypatch):
    monkeypatch.setattr(grpo_lab, "init_distributed", lambda: (0, 2))
    with pytest.raises(RuntimeError, match="configs/accelerate/README.md"):
        grpo_lab.run(grpo_lab.load_config(LABS["grpo"][1]))


def test_dpo_torchrun_two_ranks_match_one_process(tmp_path):
    """2 gloo ranks on CPU, same global batch: the same loss trajectory as one process, one set of checkpoints."""
    config = LABS["dpo"][1]
    one = dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "one"), log_every=0), resume=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "COURSE_DDP_BACKEND": "gloo"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "course_utils.labs.dpo", "--config", str(config), "--out-dir", str(tmp_path / "two"),
                           "--no-resume"], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout.decode() + proc.stderr.decode())[-4000:]
    two = json.loads((tmp_path / "two" / "losses.json").read_text())
    diff = max(abs(a - b) for a, b in zip(two, one["losses"]))
    print(f"DPO, 2 ranks vs 1 process: max loss difference {diff:.1e} over {len(two)} steps")
    assert len(two) == len(one["losses"]) and diff < 1e-4, f"max_diff {diff:.3g}: {two} vs {one['losses']}"
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "checkpoints").iterdir())


def test_dpo_script_online_samples_pairs_and_resumes_like_an_uninterrupted_run(tmp_path):
    """Online DPO pairs depend only on (seed, step) and the weights, so a resumed run draws what the full run drew."""
    config = LABS["dpo"][1]
    kw = dict(online=True, n_pairs=1, steps=3, save_every=1, log_every=0, eval_tasks=8)
    full = dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "full"), **kw), resume=False)
    dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "cut"), **kw), resume=False, stop_at_step=1)
    resumed = dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "cut"), **kw))
    assert full["n_pairs"] == 0 and resumed["resumed_from"] == 1 and resumed["step"] == 3
    assert max(abs(a - b) for a, b in zip(full["losses"], resumed["losses"])) < WEIGHT_TOL, (full["losses"], resumed["losses"])
    acc = full["held_out_accuracy"]
    assert set(acc) == {"before", "after"} and all(0 <= v <= 1 for v in acc.values()), acc
    with pytest.raises(ValueError, match=r"online_families must be a non-empty list from .*got \['algebra'\]"):
        dpo_lab.load_config(None, online_families=["algebra"])
    with pytest.raises(ValueError, match=r"group_size must be an int >= 2, got 1"):
        dpo_lab.load_config(None, group_size=1)


@pytest.mark.parametrize("method", ["ipo", "orpo"])
def test_dpo_script_other_methods_finish_and_resume_like_an_uninterrupted_run(method, tmp_path, monkeypatch):
    """IPO (with a reference, on pairs sampled from the model as in notebook 08) and ORPO (reference-free, so no frozen
    copy is made, on rule-made pairs): finite losses, and a run stopped at step 2 then resumed ends with the
    uninterrupted run's losses."""
    config = LABS["dpo"][1]
    copies = []
    frozen_copy = dpo_lab.dpo.frozen_copy
    monkeypatch.setattr(dpo_lab.dpo, "frozen_copy", lambda model: copies.append(1) or frozen_copy(model))
    kw = dict(method=method, n_pairs=16, log_every=0, save_every=2, eval_pairs=4)
    if method == "ipo":
        kw |= dict(n_pairs=0, n_sampled=12)
    full = dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "full"), **kw), resume=False)
    dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "cut"), **kw), resume=False, stop_at_step=2)
    resumed = dpo_lab.run(dpo_lab.load_config(config, out_dir=str(tmp_path / "cut"), **kw))
    steps = json.loads(config.read_text())["steps"]
    assert len(full["losses"]) == steps and all(map(lambda x: abs(x) < float("inf"), full["losses"])), full["losses"]
    assert resumed["resumed_from"] == 2 and resumed["step"] == steps and len(resumed["losses"]) == steps
    diff = max(abs(a - b) for a, b in zip(full["losses"], resumed["losses"]))
    assert diff < WEIGHT_TOL, f"max_diff {diff:.3g}: {full['losses']} vs {resumed['losses']}"
    assert len(copies) == (3 if dpo_lab.dpo.needs_reference(method) else 0), copies
    assert {"acc", "margin", "logp_chosen", "logp_rejected"} <= set(full["metrics"][-1])
    assert ("dpo_acc" in full["held_out"]) == (method == "ipo"), full["held_out"]  # no reference: no DPO reward


def test_grpo_script_passes_dapo_options_and_control_rewards(tmp_path):
    """The lab's DAPO / Dr. GRPO keys reach grpo.train_grpo, and a control reward set replaces the verifier."""
    config = LABS["grpo"][1]
    kw = dict(steps=2, save_every=1, log_every=0, rewards="format_only", loss_type="dapo", clip_eps_high=0.28,
              dynamic_sampling=True, overlong_buffer=4, mask_truncated_completions=True, beta=0.0)
    out = grpo_lab.run(grpo_lab.load_config(config, out_dir=str(tmp_path / "run"), **kw), resume=False)
    rows = [h for h in out["history"] if "loss" in h]
    assert len(rows) == 2 and out["config"]["loss_type"] == "dapo"
    for h in rows:
        assert {"reward_format", "reward_overlong", "kept_groups", "sampled_groups"} <= set(h), h
        assert "reward_accuracy" not in h and h["sampled_groups"] >= 2, h
    with pytest.raises(ValueError, match=r"rewards must be one of \['default', 'all', 'format_only', 'random'\]"):
        grpo_lab.load_config(None, rewards="verifier")
    with pytest.raises(ValueError, match="cfg.loss_type must be one of"):
        grpo_lab.load_config(None, loss_type="ppo")
