"""How lab 08 measures a preference-tuned model: KL on policy samples (vs the exact one-token KL), per-token log-prob
changes (vs sequence_logprobs), the displacement summary (hand-worked), training with held-out evaluations (vs one
uninterrupted run)."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils import data, dpo
from course_utils.train import TrainConfig, train


def _perturbed(model, scale, seed):
    """A copy of `model` with Gaussian noise of std `scale` added to every weight (a 'trained' policy)."""
    policy = dpo.frozen_copy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return policy


def _pairs(tok, n=3):
    tasks = data.make_tasks(n, "train", seed=4, families=["addition"])
    wrong = [t.reply[:-1] + str((int(t.reply[-1]) + 1) % 10) for t in tasks]
    return dpo.tokenize_pairs(tok, [dpo.PreferencePair(t.prompt, t.reply, w, t.family, "rule") for t, w in zip(tasks, wrong)])


def test_sampled_kl_is_zero_for_the_reference_and_matches_the_exact_one_token_kl(tiny):
    model, tok = tiny
    prompts = [t.prompt for t in data.make_tasks(2, "test", seed=3, families=["addition"])]
    same = dpo.sampled_kl(model, model, tok, prompts, samples_per_prompt=4, max_new_tokens=5)
    assert same["kl"] == 0.0 and same["se"] == 0.0
    # one-token replies from a flat reference (the exact KL is a sum over the vocabulary at the first reply position)
    ref = dpo.frozen_copy(model)
    with torch.no_grad():
        ref.lm_head.weight.mul_(0.05)  # near-uniform next-token distribution: every sample term is well behaved
    policy = dpo.frozen_copy(ref)
    with torch.no_grad():
        policy.lm_head.weight.add_(0.05 * torch.randn(policy.lm_head.weight.shape, generator=torch.Generator().manual_seed(1)))
    est = dpo.sampled_kl(policy, ref, tok, prompts[:1], samples_per_prompt=200, max_new_tokens=1, seed=5)
    ids = tok.apply_chat_template([{"role": "user", "content": prompts[0]}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(policy(ids).logits[0, -1].double(), -1)
        lq = torch.log_softmax(ref(ids).logits[0, -1].double(), -1)
    exact = (lp.exp() * (lp - lq)).sum().item()
    assert exact > 5 * est["se"], (exact, est)  # the perturbation is large enough for the comparison to mean something
    assert abs(est["kl"] - exact) < 4 * est["se"], (est, exact)
    assert est["mean_tokens"] == 1.0


def test_token_logp_changes_sum_to_the_sequence_logprobs(tiny):
    model, tok = tiny
    policy = _perturbed(model, 0.01, seed=2)
    examples = _pairs(tok)
    rows = dpo.token_logp_changes(policy, model, examples, tok.pad_token_id)
    b = dpo.collate_pairs(examples, tok.pad_token_id)
    with torch.no_grad():
        after = dpo.sequence_logprobs(policy, b["input_ids"], b["attention_mask"], b["loss_mask"])  # (2B,)
        before = dpo.sequence_logprobs(model, b["input_ids"], b["attention_mask"], b["loss_mask"])
    B = len(examples)
    for i, (row, e) in enumerate(zip(rows, examples)):
        for key, idx in (("chosen", i), ("rejected", B + i)):
            assert row[f"{key}_ids"] == e[f"{key}_ids"]
            assert abs(sum(row[f"{key}_after"]) - after[idx].item()) < 1e-4
            assert abs(sum(row[f"{key}_before"]) - before[idx].item()) < 1e-4
        d = row["diverge"]
        assert e["chosen_ids"][:d] == e["rejected_ids"][:d] and e["chosen_ids"][d] != e["rejected_ids"][d]
        assert row["chosen_before"][:d] == pytest.approx(row["rejected_before"][:d], abs=1e-5)  # same context


def test_displacement_summary_hand_worked():
    rows = [{"diverge": 2, "chosen_before": [-1, -1, -2, -3], "chosen_after": [-1, -2, -1, -5],
             "rejected_before": [-1, -1, -4], "rejected_after": [-1, -2, -6]},
            {"diverge": 1, "chosen_before": [0, -1, 0], "chosen_after": [-1, 0, -2],
             "rejected_before": [0, -2], "rejected_after": [-1, -5]}]
    out = dpo.displacement_summary(rows)
    # pair 1: shared deltas [0, -1] -> -0.5; chosen at 2: +1, after: -2; rejected at 2: -2, no tail
    # pair 2: shared [-1] -> -1; chosen at 1: +1, after: -2; rejected at 1: -3, no tail
    assert out["shared prefix"][:1] == (-0.75,) and out["shared prefix"][2] == 2
    assert out["shared prefix"][1] == pytest.approx(math.sqrt(0.125 / 2))
    assert out["chosen: first differing token"][:1] == (1.0,) and out["chosen: first differing token"][1] == 0.0
    assert out["rejected: first differing token"][0] == -2.5
    assert out["chosen: after it"][0] == -2.0
    assert out["rejected: after it"][2] == 0 and math.isnan(out["rejected: after it"][0])


def test_train_and_track_equals_one_uninterrupted_run(tiny, tmp_path):
    model, tok = tiny
    examples = _pairs(tok, n=6)
    tasks = data.make_tasks(3, "test", seed=2, families=["addition"])
    cfg = TrainConfig(steps=5, lr=1e-3, warmup=1, seed=0)
    runs = {}
    for name in ("tracked", "plain"):
        policy = dpo.frozen_copy(model).requires_grad_(True)
        batch_fn = dpo.make_pair_batch_fn(examples, 2, tok.pad_token_id, seed=0)
        loss_fn = dpo.make_loss_fn(dpo.PreferenceConfig("dpo"), model)
        if name == "tracked":
            seen = []
            result, curve = dpo.train_and_track(policy, tok, loss_fn, batch_fn,
                                                TrainConfig(**{**cfg.__dict__, "checkpoint_dir": tmp_path}), tasks, every=2,
                                                on_eval=seen.append)
            assert sorted(curve) == [0, 2, 4, 5] and all(len(c) == len(tasks) for c in curve.values())
            assert [sorted(c) for c in seen] == [[0, 2], [0, 2, 4], [0, 2, 4, 5]] and seen[-1] == curve
            assert result.resumed_from == 4 and result.seconds > 0
        else:
            result = train(policy, loss_fn, batch_fn, cfg)
        runs[name] = result.losses
    assert runs["tracked"] == pytest.approx(runs["plain"], abs=1e-6)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        dpo.train_and_track(dpo.frozen_copy(model).requires_grad_(True), tok, loss_fn, batch_fn,
                            TrainConfig(**{**cfg.__dict__, "checkpoint_dir": tmp_path}), tasks, every=2)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        dpo.train_and_track(model, tok, loss_fn, batch_fn, cfg, tasks, every=2)
