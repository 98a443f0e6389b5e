"""Parity and bad-input tests for course_utils.grpo and course_utils.rewards.

References: trl 1.16's own code (nanstd + the advantage lines of GRPOTrainer, and GRPOTrainer._compute_loss called on
a stub trainer), an independent float64 implementation of trl's loss formula, transformers' greedy generate.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from course_utils import grpo
from course_utils.data import Task, make_tasks
from course_utils.rewards import accuracy_reward, digits_reward, format_reward, score_completions

SHAPES = [(1, 2), (3, 4), (5, 8), (16, 16)]  # (number of groups, group_size)


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# ---- group advantages -------------------------------------------------------------------------------

def _trl_advantages(rewards, group_size, scale_rewards="group"):
    """The lines of trl 1.16 GRPOTrainer._generate_and_score_completions ('sum_then_normalize'), with trl's nanstd."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, group_size), dim=1).repeat_interleave(group_size, dim=0)
    std = nanstd(rewards.view(-1, group_size), dim=1).repeat_interleave(group_size, dim=0)
    adv = rewards - mean
    if scale_rewards != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "binary", "format+accuracy"])
def test_group_advantages_match_trl(shape, kind):
    n_groups, G = shape
    g = torch.Generator().manual_seed(n_groups * 100 + G)
    if kind == "normal":
        r = torch.randn(n_groups * G, generator=g) * 3 + 1
    elif kind == "binary":
        r = torch.randint(0, 2, (n_groups * G,), generator=g).float()
    else:
        fmt = torch.randint(0, 2, (n_groups * G,), generator=g).float()
        r = fmt + fmt * torch.randint(0, 2, (n_groups * G,), generator=g).float()
    for scale, trl_scale in ((True, "group"), (False, "none")):
        got = grpo.group_advantages(r, G, scale=scale)
        ref = _trl_advantages(r, G, trl_scale)
        assert got.shape == r.shape
        assert _max_diff(got, ref) < 1e-6, f"scale={scale} max_diff {_max_diff(got, ref):.3g}"


def test_group_advantages_all_equal_groups_are_zero_not_nan():
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 2.0])
    got = grpo.group_advantages(r, 4)
    assert not torch.isnan(got).any()
    assert torch.equal(got[:8], torch.zeros(8)), got
    ref = _trl_advantages(r, 4)
    assert _max_diff(got, ref) < 1e-6
    # hand-worked: group [0, 2, 0, 2] has mean 1 and unbiased std sqrt(4/3)
    assert abs(got[9].item() - 1 / (math.sqrt(4 / 3) + 1e-4)) < 1e-6


def test_group_advantages_sum_to_zero_per_group():
    r = torch.rand(24, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    adv = grpo.group_advantages(r, 6)
    assert adv.view(4, 6).sum(1).abs().max() < 1e-12


# ---- the loss ---------------------------------------------------------------------------------------

def _random_batch(N, C, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(N, C, generator=g, dtype=dtype) * 3
    old = logps + torch.randn(N, C, generator=g, dtype=dtype) * 0.3  # ratios well outside [0.8, 1.2] too
    ref = logps + torch.randn(N, C, generator=g, dtype=dtype) * 0.5
    adv = torch.randn(N, generator=g, dtype=dtype)
    lengths = torch.randint(1, C + 1, (N,), generator=g)
    lengths[0] = C
    mask = (torch.arange(C)[None, :] < lengths[:, None]).to(dtype)  # (N, C)
    return logps, old, ref, adv, mask


def _reference_loss(logps, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, L):
    """An independent float64 loop over sequences and tokens, written from trl's formula."""
    N, C = logps.shape
    per_seq_sum, per_seq_n = [], []
    for i in range(N):
        s, n = 0.0, 0.0
        for t in range(C):
            if mask[i, t] == 0:
                continue
            ratio = math.exp(logps[i, t].item() - old[i, t].item())
            a = adv[i].item()
            term = -min(ratio * a, min(max(ratio, 1 - eps_low), 1 + eps_high) * a)
            if beta:
                d = ref[i, t].item() - logps[i, t].item()
                term += beta * (math.exp(d) - d - 1)
            s += term
            n += 1
        per_seq_sum.append(s)
        per_seq_n.append(n)
    if loss_type == "grpo":
        return sum(s / max(n, 1.0) for s, n in zip(per_seq_sum, per_seq_n)) / N
    if loss_type == "bnpo":
        return sum(per_seq_sum) / max(sum(per_seq_n), 1.0)
    return sum(per_seq_sum) / (N * L)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("N,C", [(1, 1), (4, 6), (8, 12)])
def test_grpo_loss_matches_float64_reference(loss_type, N, C):
    for k, (beta, eps, eps_high, L) in enumerate([(0.04, 0.2, None, None), (0.0, 0.1, 0.28, C + 4), (0.5, 0.3, None, C)]):
        logps, old, ref, adv, mask = _random_batch(N, C, seed=N * 31 + C + k)
        got = grpo.grpo_loss(logps, old, ref, adv, mask, clip_eps=eps, beta=beta, loss_type=loss_type,
                             max_completion_length=L, clip_eps_high=eps_high)
        expected = _reference_loss(logps, old, ref, adv, mask, eps, eps if eps_high is None else eps_high, beta,
                                   loss_type, C if L is None else L)
        assert abs(got.item() - expected) < 1e-10, f"{loss_type} case {k}: max_diff {abs(got.item() - expected):.3g}"


def _trl_compute_loss(logps, old, ref, adv, mask, eps, beta, loss_type, L):
    """Call trl's GRPOTrainer._compute_loss itself on a stub trainer that returns our per-token log-probs."""
    from trl import GRPOTrainer

    N, C = logps.shape
    entropies = torch.zeros_like(logps)
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, entropies, None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type=loss_type,
        epsilon_low=eps, epsilon_high=eps, use_vllm=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=L, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction="sum": x, gather_for_metrics=lambda x: x),
    )
    inputs = {"prompt_ids": torch.zeros(N, 3, dtype=torch.long), "prompt_mask": torch.ones(N, 3, dtype=torch.long),
              "completion_ids": torch.zeros(N, C, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref}
    return GRPOTrainer._compute_loss(stub, None, inputs), stub._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_and_grads_match_trl_compute_loss(loss_type):
    for N, C, beta in [(2, 3, 0.04), (8, 12, 0.0), (6, 7, 0.3)]:
        logps, old, ref, adv, mask = _random_batch(N, C, seed=N + C)
        lp1 = logps.clone().requires_grad_(True)
        lp2 = logps.clone().requires_grad_(True)
        trl_loss, metrics = _trl_compute_loss(lp1, old, ref, adv, mask, 0.2, beta, loss_type, C + 2)
        ours, stats = grpo.grpo_loss(lp2, old, ref, adv, mask, 0.2, beta, loss_type, max_completion_length=C + 2,
                                     return_stats=True)
        assert abs(ours.item() - trl_loss.item()) < 1e-10, f"loss max_diff {abs(ours.item() - trl_loss.item()):.3g}"
        (g1,) = torch.autograd.grad(trl_loss, lp1)
        (g2,) = torch.autograd.grad(ours, lp2)
        assert _max_diff(g1, g2) < 1e-10, f"grad max_diff {_max_diff(g1, g2):.3g}"
        if beta:
            assert abs(stats["kl"] - metrics["kl"][-1]) < 1e-6
        assert abs(stats["clip_frac"] - metrics["clip_ratio/region_mean"][-1]) < 1e-6  # trl logs in float32


def test_gradients_only_through_completion_tokens():
    logps, old, ref, adv, mask = _random_batch(6, 10, seed=5)
    mask[1, 4:] = 0
    for loss_type in grpo.LOSS_AGGREGATIONS:
        lp = logps.clone().requires_grad_(True)
        loss = grpo.grpo_loss(lp, old, ref, adv, mask, loss_type=loss_type)
        (grad,) = torch.autograd.grad(loss, lp)
        assert torch.all(grad[mask == 0] == 0), f"{loss_type}: gradient on padding tokens"
        assert torch.all(grad[mask == 1].abs().sum() > 0)
        # changing the masked-out log-probs (any finite value) leaves the loss unchanged
        moved = torch.where(mask.bool(), logps, torch.full_like(logps, -7.0))
        assert abs(grpo.grpo_loss(moved, torch.where(mask.bool(), old, moved), torch.where(mask.bool(), ref, moved),
                                  adv, mask, loss_type=loss_type).item() - loss.item()) < 1e-12


def test_completion_logprobs_only_depend_on_their_tokens_and_match_naive(tiny):
    model, tok = tiny
    ro = grpo.sample_completions(model, tok, ["What is 1 + 2?", "Reverse the word cat."], group_size=3,
                                 max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    C = ro.completion_ids.shape[1]
    lp = grpo.completion_logprobs(model, ro.input_ids, ro.attention_mask, C)
    # naive: one sequence at a time, no padding at all
    for i in range(ro.input_ids.shape[0]):
        keep = ro.attention_mask[i].bool()
        ids = ro.input_ids[i][keep][None]
        n = int(ro.completion_mask[i].sum())
        logits = model(input_ids=ids).logits[0, -n - 1:-1]
        naive = torch.log_softmax(logits.double(), -1).gather(-1, ids[0, -n:, None]).squeeze(-1)
        if n < C:  # trailing padding in the batch: the real completion tokens are the first n
            assert _max_diff(lp[i, :n], naive) < 1e-4, f"row {i} max_diff {_max_diff(lp[i, :n], naive):.3g}"
        else:
            assert _max_diff(lp[i], naive) < 1e-4, f"row {i} max_diff {_max_diff(lp[i], naive):.3g}"
    # a training step moves only parameters through completion-token log-probs: prompt embeddings' grads flow,
    # but the loss is unchanged when padding positions hold other tokens
    ids2 = ro.input_ids.clone()
    ids2[:, -C:][ro.completion_mask == 0] = 5
    lp2 = grpo.completion_logprobs(model, ids2, ro.attention_mask, C)
    assert _max_diff(lp2[ro.completion_mask.bool()], lp[ro.completion_mask.bool()]) < 1e-5


def test_greedy_sampling_matches_transformers_generate(tiny):
    model, tok = tiny
    prompts = ["What is 12 + 30?", "Sort these numbers: 5 3 9.", "How many times does the letter a appear in banana?"]
    ro = grpo.sample_completions(model, tok, prompts, group_size=1, max_new_tokens=10, temperature=0)
    for i, p in enumerate(prompts):
        enc = tok(grpo.chat_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=10, do_sample=False, eos_token_id=[0, 2], pad_token_id=tok.pad_token_id)
        ref = out[0, enc["input_ids"].shape[1]:]
        n = int(ro.completion_mask[i].sum())
        assert ro.completion_ids[i, :n].tolist() == ref.tolist(), (ro.completion_ids[i], ref)


def test_sampling_is_reproducible_with_a_generator(tiny):
    model, tok = tiny
    a = grpo.sample_completions(model, tok, ["What is 1 + 2?"], 4, 6, generator=torch.Generator().manual_seed(7))
    b = grpo.sample_completions(model, tok, ["What is 1 + 2?"], 4, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.completion_ids, b.completion_ids)


def test_token_gradient_weights_hand_worked():
    # one group of G=2: a short right answer (A=+1, 2 tokens) and a long wrong one (A=-1, 8 tokens)
    w = grpo.token_gradient_weights([2, 8], [1.0, -1.0], "grpo")
    assert abs(w[0, 0].item() + 1 / (2 * 2)) < 1e-12 and abs(w[1, 0].item() - 1 / (2 * 8)) < 1e-12
    w = grpo.token_gradient_weights([2, 8], [1.0, -1.0], "bnpo")
    assert abs(w[0, 0].item() + 1 / 10) < 1e-12 and abs(w[1, 7].item() - 1 / 10) < 1e-12
    w = grpo.token_gradient_weights([2, 8], [1.0, -1.0], "dr_grpo", max_completion_length=16)
    assert abs(w[0, 1].item() + 1 / 32) < 1e-12 and abs(w[1, 3].item() - 1 / 32) < 1e-12
    assert w[0, 2:].abs().sum() == 0


def test_majority_answer():
    assert grpo.majority_answer(["12", " 13", "13 ", "12", "7"]) == "12"
    assert grpo.majority_answer(["1", "2", "2"]) == "2"
    assert grpo.majority_answer(["1+1=2 so 2", "0+1=1 so 1", "1+0=1 so 1"]) == "1"  # votes on the final answer


def test_train_grpo_resume_equals_uninterrupted(tiny, tmp_path):
    import copy

    model, tok = tiny
    tasks = make_tasks(20, "train", seed=0, families=["addition"])
    cfg = grpo.GRPOConfig(steps=3, prompts_per_step=2, group_size=2, max_new_tokens=4, lr=1e-3, save_every=1,
                          eval_every=0)
    m_full = copy.deepcopy(model)
    full = grpo.train_grpo(m_full, tok, tasks, cfg, checkpoint_dir=tmp_path / "a")
    m_part = copy.deepcopy(model)
    grpo.train_grpo(m_part, tok, tasks, cfg, checkpoint_dir=tmp_path / "b", stop_at_step=2)
    m_res = copy.deepcopy(model)
    res = grpo.train_grpo(m_res, tok, tasks, cfg, ref_model=copy.deepcopy(model), checkpoint_dir=tmp_path / "b",
                          resume=True)
    assert res.resumed_from == 2 and len(res.history) == 3
    diff = max(_max_diff(p, q) for p, q in zip(m_full.parameters(), m_res.parameters()))
    assert diff < 1e-5, f"resumed weights differ: max_diff {diff:.3g}"
    assert abs(full.history[-1]["reward"] - res.history[-1]["reward"]) < 1e-6


# ---- rewards ----------------------------------------------------------------------------------------

def test_rewards_right_wrong_malformed():
    work = "9+9=18 7+5+1=13 5+0+1=6"  # 579 + 9 = 588, worked by hand
    comps = [f"{work} so 588", f" {work} so 588 ", f"{work} so 587", "588", f"{work} so 588 is it", "9+9=18 so 588",
             "3 10 42", "3 10 42", "tac", "[CAT]", "[cat]", [{"role": "assistant", "content": f"{work} so 588"}]]
    fams = ["addition"] * 6 + ["sort", "sort", "reverse", "format", "format", "addition"]
    answers = ["588"] * 6 + ["3 10 42", "3 10 41", "tac", "[CAT]", "[CAT]", "588"]
    assert format_reward(comps, family=fams) == [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1]
    assert accuracy_reward(comps, answer=answers) == [1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1]
    assert digits_reward([f"{work} so 578", "578", "5 78", "so"], answer=["588"] * 4) == [2 / 3, 2 / 3, 0.0, 0.0]
    # trl calls reward functions with extra keyword arguments; they must be ignored
    assert accuracy_reward(["7"], answer=["7"], prompts=["p"], completion_ids=[[1]], trainer_state=None) == [1.0]


def test_score_completions_agrees_with_check_answer():
    from course_utils.data import check_answer

    tasks = make_tasks(30, "test", seed=4)
    comps = [t.reply if i % 3 else t.answer + "0" for i, t in enumerate(tasks)]
    s = score_completions(comps, tasks)
    assert s["accuracy"].tolist() == [float(check_answer(t, c)) for t, c in zip(tasks, comps)]
    assert score_completions([t.reply for t in tasks], tasks)["format"].tolist() == [1.0] * len(tasks)  # SFT targets are well-formed
    assert set(s) == {"format", "accuracy"}


def test_reward_bad_inputs():
    with pytest.raises(ValueError, match="family must be one of"):
        format_reward(["1"], family=["poetry"])
    with pytest.raises(ValueError, match="answer must be a list with one entry per completion"):
        accuracy_reward(["1", "2"], answer=["1"])
    with pytest.raises(TypeError, match="completion must be a str"):
        accuracy_reward([42], answer=["42"])
    with pytest.raises(ValueError, match="tasks must be a list of data.Task"):
        score_completions(["1"], [Task("addition", "p", "1"), Task("addition", "p", "1")])


# ---- bad inputs -------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    r = torch.zeros(6)
    with pytest.raises(ValueError, match=r"group_size=4 must divide the number of rewards, got 6"):
        grpo.group_advantages(r, 4)
    with pytest.raises(ValueError, match="group_size must be an int >= 2"):
        grpo.group_advantages(r, 1)
    with pytest.raises(TypeError, match="rewards must be a floating tensor"):
        grpo.group_advantages(torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="rewards must be finite"):
        grpo.group_advantages(torch.tensor([0.0, float("nan")]), 2)
    logps, old, ref, adv, mask = _random_batch(4, 5, seed=0)
    with pytest.raises(ValueError, match=r"clip_eps must be a number > 0, got 0"):
        grpo.grpo_loss(logps, old, ref, adv, mask, clip_eps=0)
    with pytest.raises(ValueError, match=r"clip_eps must be a number > 0, got -0.1"):
        grpo.grpo_loss(logps, old, ref, adv, mask, clip_eps=-0.1)
    with pytest.raises(ValueError, match=r"old_logps must have the shape of logps \(4, 5\), got \(4, 4\)"):
        grpo.grpo_loss(logps, old[:, :4], ref, adv, mask)
    with pytest.raises(ValueError, match=r"completion_mask must have the shape of logps"):
        grpo.grpo_loss(logps, old, ref, adv, mask[:3])
    with pytest.raises(ValueError, match=r"advantages must be \(N,\) = \(4,\)"):
        grpo.grpo_loss(logps, old, ref, adv[:3], mask)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        grpo.grpo_loss(logps, old, ref, adv, mask, loss_type="dapo-ish")
    with pytest.raises(ValueError, match="ref_logps is required when beta > 0"):
        grpo.grpo_loss(logps, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="beta must be a number >= 0"):
        grpo.grpo_loss(logps, old, ref, adv, mask, beta=-1.0)
    with pytest.raises(ValueError, match="max_completion_length must be an int >= the completion length 5"):
        grpo.grpo_loss(logps, old, ref, adv, mask, loss_type="dr_grpo", max_completion_length=3)
    with pytest.raises(ValueError, match="cfg.group_size must be an int >= 2"):
        grpo.train_grpo(None, None, make_tasks(2, seed=0), grpo.GRPOConfig(group_size=1))
    with pytest.raises(ValueError, match="cfg.loss_type must be one of"):
        grpo.train_grpo(None, None, make_tasks(2, seed=0), grpo.GRPOConfig(loss_type="ppo"))
