"""Every exercise check can fail: a stub reads as TODO, a wrong answer as FAIL, and neither raises.

The PASS side is tested by the solutions notebooks (their check cells are compared with the stored 'PASS' lines).
"""

from __future__ import annotations

import math
import inspect

import pytest
import torch

import course_utils as cu

CHECKS = sorted(name for name, fn in inspect.getmembers(cu.exercises, inspect.isfunction) if name.startswith("check_"))


def test_every_lecture_has_checks():
    assert len(CHECKS) >= 32, CHECKS


def _stub(*args, **kwargs):
    raise NotImplementedError


def _wrong(*args, **kwargs):
    return torch.full((1,), 7.0)  # the wrong type or shape for every exercise, never a right answer


def _raises(*args, **kwargs):
    raise ValueError("a student's bug")


@pytest.mark.parametrize("name", CHECKS)
@pytest.mark.parametrize("fn, verdict", [(_stub, "TODO"), (_wrong, "FAIL"), (_raises, "FAIL")])
def test_check_reports_unfinished_or_wrong_functions(name, fn, verdict, capsys):
    assert getattr(cu.exercises, name)(fn) is None
    out = capsys.readouterr().out.strip()
    assert out.startswith(verdict + " "), (name, out)
    if fn is _raises:
        assert "ValueError: a student's bug" in out, out


def _decode(scale=True, mask_first=False, append=True):
    def decode_step(q, k_new, v_new, cache):
        keys, values = torch.cat([cache[0], k_new], -2), torch.cat([cache[1], v_new], -2)
        k_att, v_att = (keys, values) if append else cache
        scores = q @ k_att.transpose(-1, -2) / (q.shape[-1] ** 0.5 if scale else 1.0)  # (B, H, 1, S)
        if mask_first:
            scores = scores.masked_fill(~torch.ones(1, scores.shape[-1], dtype=torch.bool).tril(), float("-inf"))
        return torch.softmax(scores, -1) @ v_att, (keys, values)
    return decode_step


@pytest.mark.parametrize("kwargs, expected", [({}, "PASS"), ({"scale": False}, "1/sqrt(D)"),
                                              ({"mask_first": True}, "use no mask"), ({"append": False}, "then attend")])
def test_decode_step_hints(kwargs, expected, capsys):
    cu.exercises.check_decode_step(_decode(**kwargs))
    out = capsys.readouterr().out
    assert expected in out, out


def test_beam_loses_check_passes_on_a_known_search_error_and_hints_otherwise(capsys):
    cu.exercises.check_beam_loses(lambda: "Once upon a time, there was a blue fox named Ella.")
    out = capsys.readouterr().out
    assert "PASS a prompt where beam search loses" in out, out
    cu.exercises.check_beam_loses(lambda: "Once upon a time,")
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and "Hint" in out, out


@pytest.mark.parametrize("wrong, hint", [(lambda n, c, k: c / n, "pass@1"),
                                         (lambda n, c, k: 1 - (1 - c / n) ** k, "without replacement")])
def test_pass_at_k_hints(wrong, hint, capsys):
    cu.exercises.check_pass_at_k(wrong)
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and hint in out, out


_GAP = lambda pc, pr, rc, rr: (pc - rc) - (pr - rr)  # noqa: E731


@pytest.mark.parametrize("check, fn, expected", [
    ("check_dpo_loss", lambda pc, pr, rc, rr, b: -torch.nn.functional.logsigmoid(b * _GAP(pc, pr, rc, rr)), "PASS"),
    ("check_dpo_loss", lambda pc, pr, rc, rr, b: -torch.nn.functional.logsigmoid(-b * _GAP(pc, pr, rc, rr)), "sign flipped"),
    ("check_dpo_loss", lambda pc, pr, rc, rr, b: -torch.nn.functional.logsigmoid(_GAP(pc, pr, rc, rr)), "multiply"),
    ("check_ipo_loss", lambda pc, pr, rc, rr, b: (_GAP(pc, pr, rc, rr) - 1 / (2 * b)) ** 2, "PASS"),
    ("check_ipo_loss", lambda pc, pr, rc, rr, b: (_GAP(pc, pr, rc, rr) - 1 / b) ** 2, "not 1/β"),
    ("check_ipo_loss", lambda pc, pr, rc, rr, b: (b * _GAP(pc, pr, rc, rr) - 0.5) ** 2, "β sets the target"),
])
def test_pair_loss_hints(check, fn, expected, capsys):
    getattr(cu.exercises, check)(fn)
    out = capsys.readouterr().out
    assert expected in out, out


@pytest.mark.parametrize("fn, expected", [
    (lambda r, G: (r.view(-1, G) != r.view(-1, G)[:, :1]).any(1), "PASS"),
    (lambda r, G: r.view(-1, G).std(1) > 1e-3, "a small spread still counts"),  # a tolerance drops real signal
    (lambda r, G: (r.view(-1, G) != r.view(-1, G)[:, :1]).any(1).repeat_interleave(G), "one entry per group"),
])
def test_informative_groups_hints(fn, expected, capsys):
    cu.exercises.check_informative_groups(fn)
    out = capsys.readouterr().out
    assert expected in out, out


@pytest.mark.parametrize("check, fn, expected", [
    ("check_gae", lambda r, v, g, lam: cu.ppo.gae(r, v, g, lam), "PASS"),
    ("check_gae", lambda r, v, g, lam: cu.ppo.gae(r, v, g, 1.0), "go backwards"),  # λ ignored
    ("check_rloo_advantages", cu.ppo.rloo_advantages, "PASS"),
    ("check_rloo_advantages", lambda r, G: r - r.view(-1, G).mean(1).repeat_interleave(G), "divide by G - 1"),
    ("check_bradley_terry", lambda c, r: cu.reward_model.bradley_terry_loss(c, r), "PASS"),
    ("check_bradley_terry", lambda c, r: -torch.log(torch.sigmoid(c - r)), "use F.logsigmoid"),
])
def test_rlhf_check_hints(check, fn, expected, capsys):
    getattr(cu.exercises, check)(fn)
    out = capsys.readouterr().out
    assert expected in out, out


def _damage(model, tok, layer_type, bits):
    from course_utils import quant

    batch = quant.heldout_batch(tok, 64, ["addition", "sort", "count"])
    base = quant.reply_nll(model, batch).mean().item()
    saved = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith(layer_type):
                saved[name] = m.weight.clone()
                m.weight.copy_(quant.fake_quantize(m.weight, bits))
        damage = quant.reply_nll(model, batch).mean().item() - base
        for name, m in model.named_modules():
            if name in saved:
                m.weight.copy_(saved[name])
    return damage


@pytest.mark.parametrize("check, fn, expected", [
    ("check_group_absmax", lambda w, b, g: cu.quant.fake_quantize(w, b, g), "PASS"),
    ("check_group_absmax", lambda w, b, g: cu.quant.fake_quantize(w, b), "one scale per row"),
    ("check_forward_kl", lambda s, t: cu.distill.token_divergence(s, t, 0.0).double(), "PASS"),
    ("check_forward_kl", lambda s, t: cu.distill.token_divergence(s, t, 1.0).double(), "reverse KL"),
    ("check_layer_damage", _damage, "PASS"),
    ("check_layer_damage", lambda m, t, lt, b: _damage(m, t, "proj", b), "expected"),
])
def test_quant_check_hints(check, fn, expected, capsys):
    getattr(cu.exercises, check)(fn)
    out = capsys.readouterr().out
    assert expected in out, out


def _ngram_overlap(text, train_texts, n):
    index = cu.evaluation.ngram_index(train_texts, n)
    ratio = cu.evaluation.overlap_ratios([text], index, n)[0]
    return math.nan if ratio is None else ratio


@pytest.mark.parametrize("check, fn, expected", [
    ("check_cohen_kappa", cu.evaluation.cohen_kappa, "PASS"),
    ("check_cohen_kappa", lambda a, b: sum(x == y for x, y in zip(a, b)) / len(a), "raw agreement"),
    ("check_problems_needed", lambda g, d, min_z=2.0, power=0.8: cu.stats.problems_needed(
        g, discordance=d, min_z=min_z, power=power), "PASS"),
    ("check_problems_needed", lambda g, d, min_z=2.0, power=0.8: math.ceil(4 * (d - g * g) / g / g), "power quantile"),
    ("check_ngram_overlap", _ngram_overlap, "PASS"),
    ("check_ngram_overlap", lambda text, train, n: _ngram_overlap(text, train, n + 1), "expected"),
])
def test_evaluation_check_hints(check, fn, expected, capsys):
    getattr(cu.exercises, check)(fn)
    out = capsys.readouterr().out
    assert expected in out, out
