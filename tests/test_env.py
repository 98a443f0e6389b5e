import dataclasses

import pytest
import torch

from course_utils import env


@pytest.mark.parametrize("name", ["ci", "cpu", "gpu"])
def test_profile_by_env_var(monkeypatch, name):
    monkeypatch.setenv("COURSE_PROFILE", name)
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    prof = env.profile()
    assert prof.name == name
    assert dataclasses.is_dataclass(prof) and prof.train_steps > 0 and prof.batch_size > 0


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = (env.profile(n) for n in ("ci", "cpu", "gpu"))
    for field in ("train_steps", "eval_examples", "n_prompts", "max_new_tokens"):
        assert getattr(ci, field) < getattr(cpu, field) <= getattr(gpu, field), field


def test_profile_auto_follows_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.profile().name == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.profile().name == "gpu"


def test_profile_rejects_unknown_name(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "laptop")
    with pytest.raises(ValueError, match=r"COURSE_PROFILE must be one of \('ci', 'cpu', 'gpu'\), got 'laptop'"):
        env.profile()
    with pytest.raises(ValueError, match="name must be one of"):
        env.profile("fast")


def test_course_model_env_overrides_profile_model(monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "Qwen/Qwen3-0.6B")
    assert env.profile("ci").model == "Qwen/Qwen3-0.6B"


def test_seed_everything_makes_torch_reproducible():
    env.seed_everything(7)
    a = torch.randn(5)
    g = env.seed_everything(7)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        env.seed_everything(bad)


def test_device_env_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert env.device() == torch.device("cpu")


def test_doctor_prints_one_line_per_check(capsys):
    ok = env.doctor()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(env._CHECKS)
    assert all(line.split()[0] in ("OK", "FAIL", "INFO") for line in lines)
    assert any("course-tiny present" in line for line in lines)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert ok == (not failed), failed
    assert all("->" in line for line in failed)  # every FAIL says how to fix it


def test_doctor_reports_broken_check_instead_of_crashing(monkeypatch, capsys):
    def broken():
        raise RuntimeError("simulated")

    monkeypatch.setitem(env._CHECKS, "disk", broken)
    assert env.doctor() is False
    assert "FAIL disk" in capsys.readouterr().out
