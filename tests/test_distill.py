"""Parity tests for course_utils.distill (lecture 11) against trl's GKDTrainer.generalized_jsd_loss and float64
formulas written from the definitions (KL(p || q) = Σ p log p/q, the JSD with the mixture m = βp + (1-β)q)."""

import copy

import pytest
import torch

from course_utils import distill


def _logits(seed, shape=(3, 5, 11)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("with_labels", [False, True])
def test_generalized_jsd_equals_trl_gkd(beta, temperature, with_labels):
    from trl.experimental.gkd import GKDTrainer

    s, t = _logits(1), _logits(2)
    labels = None
    if with_labels:
        labels = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(3))
        labels[0, :2] = -100
        labels[2, 4] = -100
    ours = distill.generalized_jsd_loss(s, t, beta=beta, temperature=temperature, labels=labels)
    theirs = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    assert abs(ours.item() - theirs.item()) < 1e-5 * max(1.0, abs(theirs.item()))


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_token_divergence_equals_float64_definition(beta):
    s, t = _logits(4).double(), _logits(5).double()
    q, p = s.softmax(-1), t.softmax(-1)
    m = beta * p + (1 - beta) * q

    def kl(a, b):
        return (a * (a / b).log()).sum(-1)

    expected = {0.0: kl(p, q), 1.0: kl(q, p)}.get(beta, beta * kl(p, m) + (1 - beta) * kl(q, m))
    assert torch.allclose(distill.token_divergence(s.float(), t.float(), beta).double(), expected, atol=1e-5)


def test_student_keeping_every_layer_equals_the_teacher_and_generates(tiny):
    model, tok = tiny
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    same = distill.make_student(model, keep_layers=range(model.config.num_hidden_layers))
    with torch.no_grad():
        assert torch.allclose(same(ids).logits, model(ids).logits)
    small = distill.make_student(model, keep_layers=(0, 3))
    assert len(small.model.layers) == 2 and small.config.num_hidden_layers == 2
    assert torch.equal(small.model.layers[1].mlp.down_proj.weight, model.model.layers[3].mlp.down_proj.weight)
    out = small.generate(ids, max_new_tokens=5, do_sample=False)  # the KV cache indexes the kept layers
    assert out.shape[1] == ids.shape[1] + 5
    with pytest.raises(ValueError, match="keep_layers"):
        distill.make_student(model, keep_layers=(0, 9))


@pytest.mark.parametrize("method", list(distill.METHODS))
def test_every_method_trains_and_the_loss_is_finite(tiny, method):
    model, tok = tiny
    student = distill.make_student(model, (0, 3))
    before = copy.deepcopy(student.model.layers[0].mlp.up_proj.weight)
    result = distill.distill(student, model, tok, method,
                             distill.DistillConfig(steps=2, batch_size=2, n_prompts=4, max_new_tokens=8))
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert not torch.equal(before, student.model.layers[0].mlp.up_proj.weight)


def test_bad_inputs_name_the_argument(tiny):
    s = _logits(1)
    for call, words in [
        (lambda: distill.generalized_jsd_loss(s, _logits(2, (3, 5, 12))), "same shape"),
        (lambda: distill.generalized_jsd_loss(s, s, beta=1.5), "beta"),
        (lambda: distill.generalized_jsd_loss(s, s, temperature=0), "temperature"),
        (lambda: distill.generalized_jsd_loss(s, s, labels=torch.zeros(3, 4, dtype=torch.long)), "labels"),
        (lambda: distill.distill(None, None, None, "kd"), "method"),
    ]:
        with pytest.raises((ValueError, TypeError), match=words):
            call()


@pytest.mark.parametrize("method", ["forward_kl", "on_policy"])
def test_resumed_distillation_equals_an_uninterrupted_run(tiny, tmp_path, method):
    model, tok = tiny
    cfg = distill.DistillConfig(steps=4, batch_size=2, n_prompts=8, max_new_tokens=6)
    whole = distill.make_student(model, (0, 3))
    distill.distill(whole, model, tok, method, cfg)
    cut = distill.make_student(model, (0, 3))
    distill.distill(cut, model, tok, method, cfg, checkpoint_dir=tmp_path, stop_at_step=2)
    resumed = distill.make_student(model, (0, 3))
    distill.distill(resumed, model, tok, method, cfg, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
