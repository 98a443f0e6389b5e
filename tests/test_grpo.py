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


def _reference_loss(logps, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, L, num_items=None):
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
    if loss_type == "bnpo" or (loss_type == "dapo" and num_items is None):
        return sum(per_seq_sum) / max(sum(per_seq_n), 1.0)
    if loss_type == "dapo":
        return sum(per_seq_sum) / num_items
    return sum(per_seq_sum) / (N * L)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("N,C", [(1, 1), (4, 6), (8, 12)])
def test_grpo_loss_matches_float64_reference(loss_type, N, C):
    for k, (beta, eps, eps_high, L) in enumerate([(0.04, 0.2, None, None), (0.0, 0.1, 0.28, C + 4), (0.5, 0.3, None, C)]):
        logps, old, ref, adv, mask = _random_batch(N, C, seed=N * 31 + C + k)
        got = grpo.grpo_loss(logps, old, ref, adv, mask, clip_eps=eps, beta=beta, loss_type=loss_type,
                             max_completion_length=L, clip_eps_high=eps_high)
        expected = _reference_loss(logps, old, ref, adv, mask, eps, eps if eps_high is None else eps_high, beta,
                                   loss_type, C if L is None else L)
        assert abs(got.item() - expected) < 1e-10, f"{loss_type} case {k}: max_diff {abs(got.item() - expected):.3g}"


def _trl_compute_loss(logps, old, ref, adv, mask, eps, beta, loss_type, L, eps_high=None, num_items=None):
    """Call trl's GRPOTrainer._compute_loss itself on a stub trainer that returns our per-token log-probs."""
    from trl import GRPOTrainer

    N, C = logps.shape
    entropies = torch.zeros_like(logps)
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, entropies, None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type, epsilon_low=eps, epsilon_high=eps if eps_high is None else eps_high, use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=L, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction="sum": x, gather_for_metrics=lambda x: x,
                                    num_processes=1),
    )
    inputs = {"prompt_ids": torch.zeros(N, 3, dtype=torch.long), "prompt_mask": torch.ones(N, 3, dtype=torch.long),
              "completion_ids": torch.zeros(N, C, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum() if num_items is None else torch.tensor(float(num_items))}
    return GRPOTrainer._compute_loss(stub, None, inputs), stub._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_grpo_loss_and_grads_match_trl_compute_loss(loss_type):
    """Also with DAPO's clip-higher (trl's epsilon_high) and, for "dapo", a generation batch with more tokens than
    this micro-batch (trl's num_items_in_batch)."""
    for N, C, beta, eps_high, extra in [(2, 3, 0.04, None, 0), (8, 12, 0.0, 0.28, 0), (6, 7, 0.3, 0.28, 17)]:
        logps, old, ref, adv, mask = _random_batch(N, C, seed=N + C)
        num_items = float(mask.sum()) + extra if loss_type == "dapo" and extra else None
        lp1 = logps.clone().requires_grad_(True)
        lp2 = logps.clone().requires_grad_(True)
        trl_loss, metrics = _trl_compute_loss(lp1, old, ref, adv, mask, 0.2, beta, loss_type, C + 2, eps_high, num_items)
        ours, stats = grpo.grpo_loss(lp2, old, ref, adv, mask, 0.2, beta, loss_type, max_completion_length=C + 2,
                                     clip_eps_high=eps_high, num_items_in_batch=num_items, return_stats=True)
        if num_items is not None:  # and the float64 loop
            expected = _reference_loss(logps, old, ref, adv, mask, 0.2, eps_high, beta, "dapo", C + 2, num_items)
            assert abs(ours.item() - expected) < 1e-10
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


def test_train_grpo_dapo_options_resume_equals_uninterrupted(tiny, tmp_path):
    """Dynamic sampling (extra prompt draws), clip-higher, the overlong penalty and truncation masking keep a resumed
    run equal to an uninterrupted one, and every kept group carries a reward spread."""
    import copy

    model, tok = tiny
    tasks = make_tasks(30, "train", seed=0, families=["addition"])
    cfg = grpo.GRPOConfig(steps=3, prompts_per_step=2, group_size=3, max_new_tokens=5, lr=1e-3, save_every=1,
                          eval_every=0, loss_type="dapo", clip_eps_high=0.28, dynamic_sampling=True,
                          max_sampling_draws=4, overlong_buffer=2, mask_truncated_completions=True, beta=0.0)
    funcs = {"digits": digits_reward}
    m_full = copy.deepcopy(model)
    full = grpo.train_grpo(m_full, tok, tasks, cfg, reward_funcs=funcs, checkpoint_dir=tmp_path / "a")
    m_part = copy.deepcopy(model)
    grpo.train_grpo(m_part, tok, tasks, cfg, reward_funcs=funcs, checkpoint_dir=tmp_path / "b", stop_at_step=2)
    m_res = copy.deepcopy(model)
    res = grpo.train_grpo(m_res, tok, tasks, cfg, reward_funcs=funcs, checkpoint_dir=tmp_path / "b", resume=True)
    diff = max(_max_diff(p, q) for p, q in zip(m_full.parameters(), m_res.parameters()))
    assert res.resumed_from == 2 and diff < 1e-5, f"resumed weights differ: max_diff {diff:.3g}"
    for h in full.history:
        assert h["sampled_groups"] in (2, 4, 6, 8) and 0 <= h["kept_groups"] <= 2 and "reward_overlong" in h, h
        assert 0 <= h["truncated_frac"] <= 1 and (h["loss"] == 0.0 or h["truncated_frac"] < 1)  # all cut off: no loss


def test_dynamic_sampling_keeps_only_groups_with_a_reward_spread(tiny):
    """A reward that is one bit of a hash of the reply: some groups come out all equal, are dropped and refilled."""
    import zlib

    def parity(completions, **kwargs):
        return [float(zlib.crc32(c.encode()) & 1) for c in completions]

    model, tok = tiny
    tasks = make_tasks(40, "train", seed=1, families=["addition"])
    cfg = grpo.GRPOConfig(prompts_per_step=6, group_size=4, max_new_tokens=8, dynamic_sampling=True,
                          max_sampling_draws=4)
    dropped = 0
    for seed in range(4):
        ro, rewards, counts = grpo.training._sample_round(model, tok, tasks, cfg, {"parity": parity},
                                                           torch.Generator().manual_seed(seed))
        total = rewards["parity"]
        assert len(ro.texts) == counts["kept_groups"] * 4 == total.numel() == 24, counts
        assert grpo.informative_groups(total, 4).all(), total
        assert parity(ro.texts) == total.tolist()  # each kept row keeps its own reward
        dropped += round(counts["zero_std_frac"] * counts["sampled_groups"])
        assert counts["sampled_groups"] in (6, 12, 18, 24)
    assert dropped > 0, "no group was ever dropped: the refill path was not exercised"
    # nothing informative at all: the last draw is kept (zero advantages), and the log says every group was flat
    ro, rewards, counts = grpo.training._sample_round(model, tok, tasks, cfg, {"zero": lambda c, **k: [0.0] * len(c)},
                                                       torch.Generator().manual_seed(0))
    assert counts == {"zero_std_frac": 1.0, "sampled_groups": 24, "kept_groups": 6}


def test_concat_and_select_rollouts_keep_each_rows_logprobs(tiny):
    model, tok = tiny
    gen = torch.Generator().manual_seed(1)
    a = grpo.sample_completions(model, tok, ["What is 1 + 2?"], 2, 4, generator=gen)
    b = grpo.sample_completions(model, tok, ["Reverse the word banana.", "Sort: 3 1 2"], 2, 7, generator=gen)
    both = grpo.concat_rollouts([a, b], tok.pad_token_id)
    assert both.texts == a.texts + b.texts and both.input_ids.shape[0] == 6
    lp = grpo.completion_logprobs(model, both.input_ids, both.attention_mask, both.completion_ids.shape[1])
    for part, rows in ((a, slice(0, 2)), (b, slice(2, 6))):
        own = grpo.completion_logprobs(model, part.input_ids, part.attention_mask, part.completion_ids.shape[1])
        m = part.completion_mask.bool()
        assert _max_diff(lp[rows][:, :m.shape[1]][m], own[m]) < 1e-4
        assert both.completion_mask[rows][:, m.shape[1]:].sum() == 0
    sel = both.select(torch.tensor([False, True, True, False, False, True]))
    assert sel.texts == [both.texts[i] for i in (1, 2, 5)] and torch.equal(sel.completion_ids, both.completion_ids[[1, 2, 5]])


def test_informative_groups_overlong_penalty_and_truncation_mask():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.5, 0.5, 0.5])
    assert grpo.informative_groups(r, 3).tolist() == [False, True, False]
    # DAPO Eq. 13 by hand, L_max = 20, buffer 4: free up to 16 tokens, then -1/4 per token
    assert grpo.overlong_penalty([10, 16, 17, 18, 20, 21], 20, 4) == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert grpo.overlong_penalty(torch.tensor([19, 20, 21]), 20, 0) == [0.0, 0.0, -1.0]
    from trl.rewards import get_soft_overlong_punishment

    g = torch.Generator().manual_seed(4)
    for L, buf in ((40, 8), (100, 20), (12, 1)):
        lengths = torch.randint(0, L + 5, (50,), generator=g).tolist()
        theirs = get_soft_overlong_punishment(L, buf)(completion_ids=[[1] * n for n in lengths])
        assert grpo.overlong_penalty(lengths, L, buf) == pytest.approx(theirs, abs=1e-12)
    mask = torch.ones(3, 4)
    mask[2, 3] = 0
    got = grpo.mask_truncated(mask, torch.tensor([True, False, True]))
    assert got.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]]


def test_trl_grpotrainer_logps_and_loss_equal_ours_on_one_batch(tiny):
    """A real GRPOTrainer (trl 1.16): its per-token log-probs and its loss on our sampled batch equal ours."""
    import copy
    import warnings

    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig, GRPOTrainer

    from course_utils.rewards import ALL_REWARD_FUNCS

    model, tok = tiny
    tasks = make_tasks(8, "train", seed=2, families=["addition"])
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": t.prompt}], "answer": t.answer,
                             "family": t.family} for t in tasks])
    gen = torch.Generator().manual_seed(0)
    for loss_type, eps_high in (("grpo", None), ("dapo", 0.28), ("dr_grpo", None)):
        args = TRLConfig(output_dir="/tmp/course_trl_test", per_device_train_batch_size=8, num_generations=4,
                         max_completion_length=10, beta=0.04, epsilon=0.2, epsilon_high=eps_high, loss_type=loss_type,
                         max_steps=1, report_to="none", disable_tqdm=True, use_cpu=True, save_strategy="no",
                         bf16=False, gradient_checkpointing=False, steps_per_generation=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = GRPOTrainer(model=copy.deepcopy(model), reward_funcs=list(ALL_REWARD_FUNCS.values()), args=args,
                                  train_dataset=ds, processing_class=tok)
        ro = grpo.sample_completions(trainer.model, tok, [t.prompt for t in tasks[:2]], 4, 10, generator=gen)
        C, m = ro.completion_ids.shape[1], ro.completion_mask.bool()
        adv = grpo.group_advantages(torch.randn(8, generator=gen), 4)
        ours = grpo.completion_logprobs(trainer.model, ro.input_ids, ro.attention_mask, C)
        old = ours.detach() + 0.1 * torch.randn(ours.shape, generator=gen)  # ratios away from 1: clipping acts
        ref = ours.detach() + 0.1 * torch.randn(ours.shape, generator=gen)
        theirs, trl_loss = grpo.trl_logps_and_loss(trainer, ro, adv, old, ref)
        assert _max_diff(ours[m], theirs[m]) < 1e-4, f"{loss_type}: logps max_diff {_max_diff(ours[m], theirs[m]):.3g}"
        loss = grpo.grpo_loss(ours, old, ref, adv, ro.completion_mask, 0.2, 0.04, loss_type, max_completion_length=10,
                              clip_eps_high=eps_high)
        assert abs(loss.item() - trl_loss.item()) < 1e-5 * max(1.0, abs(loss.item())), (loss_type, loss, trl_loss)


# ---- evaluation: strict/lenient scoring, pass@k curves, coverage -------------------------------------

def test_strict_and_lenient_scoring_hand_worked():
    t = Task("addition", "What is 579 + 9?", "588")
    work = "9+9=18 7+0+1=8 5+0=5"
    replies = [f"{work} so 588", "588", f"{work} so 578", "it is 588", f"{work} so 588.", "0588", "so"]
    assert [grpo.strict_correct(t, r) for r in replies] == [True, False, False, False, False, False, False]
    assert [grpo.lenient_correct(t, r) for r in replies] == [True, True, False, True, True, True, False]
    s = Task("reverse", "Reverse cat", "tac")
    assert grpo.lenient_correct(s, " tac ") and not grpo.lenient_correct(s, "the word is tac")


def test_pass_at_k_curve_equals_brute_force_enumeration():
    """Mean over problems of the fraction of all k-subsets of the n samples that contain a right one."""
    from itertools import combinations

    g = torch.Generator().manual_seed(6)
    n = 7
    samples = [torch.rand(n, generator=g) < p for p in (0.0, 0.1, 0.5, 0.9, 1.0)]
    counts = {"n": n, "correct": [int(s.sum()) for s in samples]}
    curve = grpo.pass_at_k_curve(counts, [1, 2, 3, 7])
    for (mean, se), k in zip(curve, [1, 2, 3, 7]):
        per = [sum(any(s[list(c)]) for c in combinations(range(n), k)) / math.comb(n, k) for s in samples]
        assert abs(mean - sum(per) / len(per)) < 1e-12
        assert abs(se - float(torch.tensor(per, dtype=torch.float64).std()) / len(per) ** 0.5) < 1e-12
    with pytest.raises(ValueError, match=r"k must be an int in \[1, n_samples = 7\], got 8"):
        grpo.pass_at_k_curve(counts, [8])


def test_majority_at_k_and_coverage_hand_worked():
    tasks = [Task("addition", "p", "5"), Task("addition", "q", "7"), Task("addition", "r", "1")]
    counts = {"n": 4, "correct": [2, 0, 1], "answers": [["5", "6", "5", "6"], ["1", "1", "2", "3"], ["2", "2", "1", "9"]]}
    assert grpo.majority_at_k(counts, tasks, 1) == 1 / 3 and grpo.majority_at_k(counts, tasks, 3) == 1 / 3
    other = {"n": 4, "correct": [0, 3, 1]}
    assert grpo.coverage(counts, other) == {"both": 1, "only_a": 1, "only_b": 1, "neither": 0}
    with pytest.raises(ValueError, match="same tasks"):
        grpo.coverage(counts, {"n": 4, "correct": [1]})


def test_sample_correct_counts_agree_with_check_answer(tiny):
    from course_utils.data import check_answer

    model, tok = tiny
    tasks = make_tasks(3, "test", seed=2, families=["addition", "reverse"])
    counts = grpo.sample_correct_counts(model, tok, tasks, 5, max_new_tokens=8, seed=4)
    ro = grpo.sample_completions(model, tok, [t.prompt for t in tasks], 5, 8, generator=torch.Generator().manual_seed(4))
    assert counts["correct"] == [sum(check_answer(t, x) for x in ro.texts[i * 5:(i + 1) * 5]) for i, t in enumerate(tasks)]
    assert [len(a) for a in counts["answers"]] == [5, 5, 5] and 0 < counts["tokens"] <= 8


# ---- rewards ----------------------------------------------------------------------------------------

def test_random_reward_is_a_fair_coin_unrelated_to_the_answer():
    from course_utils.rewards import random_reward

    tasks = make_tasks(400, "train", seed=7, families=["addition"])
    replies = [t.reply if i % 2 else t.reply.replace(" so ", " so 1") for i, t in enumerate(tasks)]
    coins = random_reward(replies, prompts=[t.prompt for t in tasks])
    right = accuracy_reward(replies, answer=[t.answer for t in tasks])
    n = len(coins)
    assert abs(sum(coins) / n - 0.5) < 3 * 0.5 / n ** 0.5, sum(coins) / n  # a fair coin, within 3 SE
    p_right = sum(c for c, r in zip(coins, right) if r) / sum(right)
    p_wrong = sum(c for c, r in zip(coins, right) if not r) / (n - sum(right))
    assert abs(p_right - p_wrong) < 3 * (0.25 / sum(right) + 0.25 / (n - sum(right))) ** 0.5, (p_right, p_wrong)
    same = random_reward(["x"] * 200, prompts=["p"] * 200)  # identical replies still get their own coins
    assert 0.3 < sum(same) / 200 < 0.7
    assert random_reward(replies, prompts=[t.prompt for t in tasks]) == coins  # reproducible (resume draws the same)


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
    with pytest.raises(ValueError, match="buffer must be an int in"):
        grpo.overlong_penalty([3], 10, 10)
    with pytest.raises(ValueError, match=r"lengths\[1\] must be a non-negative int"):
        grpo.overlong_penalty([3, -1], 10, 4)
    with pytest.raises(ValueError, match="stopped must have one entry per completion"):
        grpo.mask_truncated(mask, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="cfg.clip_eps_high must be None or a number >= cfg.clip_eps"):
        grpo._check_config(grpo.GRPOConfig(clip_eps_high=0.1))
    with pytest.raises(ValueError, match="cfg.overlong_buffer must be an int in"):
        grpo._check_config(grpo.GRPOConfig(overlong_buffer=40))
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


def test_beta_zero_with_a_reference_logs_the_kl_but_does_not_penalize_it():
    logps, old, ref, adv, mask = _random_batch(5, 6, seed=12)
    with_ref, stats = grpo.grpo_loss(logps, old, ref, adv, mask, beta=0.0, return_stats=True)
    without = grpo.grpo_loss(logps, old, None, adv, mask, beta=0.0)
    d = ref - logps
    expected_kl = float(((torch.exp(d) - d - 1) * mask).sum() / mask.sum())
    assert with_ref.item() == without.item() and abs(stats["kl"] - expected_kl) < 1e-12 and stats["kl"] > 0
