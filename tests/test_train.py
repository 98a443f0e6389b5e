"""The shared training loop: schedule, checkpoints (safetensors, atomic), resume == uninterrupted run."""

import json

import pytest
import torch

from course_utils.train import (TrainConfig, latest_checkpoint, load_checkpoint, lr_at, save_checkpoint, train)


class TinyNet(torch.nn.Module):
    """Dropout (uses the torch RNG inside the loop) and a tied weight, like course-tiny's embeddings."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.mid = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.3)
        self.head = torch.nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.mid(self.emb(x)))))


def loss_fn(model, batch):
    x, y = batch
    loss = torch.nn.functional.cross_entropy(model(x), y)
    return loss, {"acc": (model(x).argmax(-1) == y).float().mean().item()}


def batch_fn(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randint(10, (16,), generator=g)
    return x, (x * 3 + 1) % 10


def fresh():
    torch.manual_seed(123)
    return TinyNet()


def test_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(steps=12, lr=3e-2, warmup=3, weight_decay=0.1, save_every=4,
                      checkpoint_dir=tmp_path / "run", seed=7)
    ref_model = fresh()
    ref = train(ref_model, loss_fn, batch_fn, TrainConfig(**{**cfg.__dict__, "save_every": 0, "checkpoint_dir": None}))

    model = fresh()
    part = train(model, loss_fn, batch_fn, cfg, stop_at_step=6)  # "interrupted" after 6 steps (saved at 4 and 6)
    assert part.step == 6 and latest_checkpoint(cfg.checkpoint_dir).name == "step_000006"
    torch.manual_seed(999)  # the process restarts: other RNG state, new model object
    model2 = TinyNet()
    res = train(model2, loss_fn, batch_fn, cfg, resume=True)
    assert res.resumed_from == 6 and res.step == 12
    for (n, a), b in zip(ref_model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), f"{n}: max_diff {(a - b).abs().max().item():.3g}"
    assert res.losses == ref.losses
    assert model2.head.weight is model2.emb.weight  # the tie survives loading


def test_callback_sees_every_step_as_the_result_records_it():
    rows = []
    cfg = TrainConfig(steps=5, lr=3e-2, warmup=2)
    res = train(fresh(), loss_fn, batch_fn, cfg, callback=rows.append)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in rows] == res.losses and [r["acc"] for r in rows] == [m["acc"] for m in res.metrics]
    assert [r["lr"] for r in rows] == [lr_at(s, cfg) for s in range(5)]


def test_resume_with_iterable_data(tmp_path):
    cfg = TrainConfig(steps=8, lr=1e-2, warmup=2, save_every=3, checkpoint_dir=tmp_path / "it", grad_accum=2)
    ref_model = fresh()
    train(ref_model, loss_fn, (batch_fn(i) for i in range(100)), TrainConfig(steps=8, lr=1e-2, warmup=2, grad_accum=2))
    m = fresh()
    train(m, loss_fn, (batch_fn(i) for i in range(100)), cfg, stop_at_step=5)
    m2 = fresh()
    train(m2, loss_fn, (batch_fn(i) for i in range(100)), cfg, resume=True)
    for a, b in zip(ref_model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b), f"max_diff {(a - b).abs().max().item():.3g}"


def test_checkpoint_files_are_safetensors_and_complete(tmp_path):
    model = fresh()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn(model, batch_fn(0))[0].backward()
    opt.step()
    folder = save_checkpoint(tmp_path / "step_000001", model, opt, 1, losses=[1.5])
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"]
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 1
    # an interrupted save (no trainer_state.json) is never picked up
    (tmp_path / "step_000009").mkdir()
    (tmp_path / "step_000009" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step_000001"
    m2 = TinyNet()
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    state = load_checkpoint(folder, m2, opt2)
    assert state["losses"] == [1.5]
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "step_000009", m2)


def test_lr_schedule_hand_values():
    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # halfway through the cosine: 0.1 + 0.9 * 0.5
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_bad_inputs(tmp_path):
    m = fresh()
    with pytest.raises(TypeError, match="TrainConfig"):
        train(m, loss_fn, batch_fn, {"steps": 3})
    with pytest.raises(ValueError, match="cfg.steps"):
        train(m, loss_fn, batch_fn, TrainConfig(steps=0))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(m, loss_fn, batch_fn, TrainConfig(steps=2, save_every=1))
    with pytest.raises(ValueError, match="stop_at_step"):
        train(m, loss_fn, batch_fn, TrainConfig(steps=2), stop_at_step=5)
    with pytest.raises(TypeError, match="data"):
        train(m, loss_fn, 3, TrainConfig(steps=2))
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(m, loss_fn, batch_fn, TrainConfig(steps=2))
