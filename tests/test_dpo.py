"""DPO / SimPO: parity with trl's sigmoid DPO loss, float64 log-prob references, hand-worked SimPO, bad inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from course_utils import dpo
from course_utils.data import Task, check_answer, make_tasks


# ---- trl's own loss code as the reference -------------------------------------------------------------

class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def gather_for_metrics(x):
        return x


def _trl_sigmoid(pc, pr, rc, rr, beta):
    """Run trl 1.16's DPOTrainer._compute_loss (loss_type="sigmoid") on given sequence log-probs.

    A stub model returns per-token log-probs whose completion sums are pc / pr; reference log-probs are passed
    as precomputed. Returns (mean loss, trl's logged metrics).
    """
    from trl import DPOTrainer

    B, T = pc.shape[0], 6
    completion_mask = torch.zeros(2 * B, T, dtype=torch.long)
    completion_mask[:, 3:] = 1
    per_token = torch.zeros(2 * B, T - 1, dtype=pc.dtype)
    per_token[:, 2:] = torch.cat([pc, pr])[:, None] / 3  # three completion tokens, summing to pc / pr

    def model(**kwargs):
        zeros = torch.zeros(2 * B, T - 1)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros(2 * B, T - 1, dtype=torch.bool))

    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", loss_types=["sigmoid"],
        loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    loss = DPOTrainer._compute_loss(fake_self, model, inputs, False)
    return loss, {k: v[-1] for k, v in fake_self._metrics["train"].items()}


def _random_logps(B, gen, dtype=torch.float64):
    base = -20 * torch.rand(4, B, generator=gen, dtype=dtype) - 1
    return base + torch.randn(4, B, generator=gen, dtype=dtype)  # pc, pr, rc, rr


@pytest.mark.parametrize("B,beta", [(1, 0.1), (5, 0.1), (16, 0.5), (7, 2.0)])
def test_dpo_loss_matches_trl_sigmoid(B, beta):
    gen = torch.Generator().manual_seed(B * 100 + int(beta * 10))
    pc, pr, rc, rr = _random_logps(B, gen)
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, beta)
    trl_loss, m = _trl_sigmoid(pc, pr, rc, rr, beta)
    diff = abs(losses.mean().item() - trl_loss.item())
    assert diff < 1e-9, f"mean loss vs trl: max_diff {diff}"
    for name, mine, theirs in (("rewards/chosen", r_c.mean(), m["rewards/chosen"]),
                               ("rewards/rejected", r_r.mean(), m["rewards/rejected"]),
                               ("rewards/margins", (r_c - r_r).mean(), m["rewards/margins"]),
                               ("rewards/accuracies", (r_c > r_r).double().mean(), m["rewards/accuracies"])):
        tol = 1e-6 if name == "rewards/accuracies" else 1e-9  # trl averages the 0/1 accuracies in float32
        assert abs(mine.item() - theirs) < tol, f"{name}: max_diff {abs(mine.item() - theirs)}"


def test_dpo_loss_per_pair_matches_trl():
    gen = torch.Generator().manual_seed(7)
    pc, pr, rc, rr = _random_logps(6, gen)
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, 0.3)
    for i in range(6):  # trl only returns the batch mean: score each pair alone
        trl_loss, m = _trl_sigmoid(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], 0.3)
        diffs = [abs(losses[i].item() - trl_loss.item()), abs(r_c[i].item() - m["rewards/chosen"]),
                 abs(r_r[i].item() - m["rewards/rejected"])]
        assert max(diffs) < 1e-9, f"pair {i}: max_diff {max(diffs)}"


def test_dpo_loss_float32_and_gradients_match_trl():
    gen = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = _random_logps(8, gen, torch.float32)
    a, b = pc.clone().requires_grad_(), pc.clone().requires_grad_()
    dpo.dpo_loss(a, pr, rc, rr, 0.1)[0].mean().backward()
    _trl_sigmoid(b, pr, rc, rr, 0.1)[0].backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-5)


def test_dpo_label_smoothing_hand_worked():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -1.5, -2.0))
    # chosen log-ratio 0.5, rejected -1.0: beta * 1.5 = 0.75; conservative DPO with eps = 0.1
    expected = 0.9 * math.log1p(math.exp(-0.75)) + 0.1 * math.log1p(math.exp(0.75))
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, 0.5, label_smoothing=0.1)
    assert abs(losses.item() - expected) < 1e-12, f"max_diff {abs(losses.item() - expected)}"
    assert abs(r_c.item() - 0.25) < 1e-12 and abs(r_r.item() + 0.5) < 1e-12
    plain = dpo.dpo_loss(pc, pr, rc, rr, 0.5)[0].item()
    assert abs(plain - math.log1p(math.exp(-0.75))) < 1e-12


def test_simpo_loss_hand_worked():
    losses, r_c, r_r = dpo.simpo_loss(torch.tensor([-1.0, -0.5], dtype=torch.float64),
                                      torch.tensor([-2.0, -0.5], dtype=torch.float64), beta=2.0, gamma=1.0)
    # pair 0: 2*(-1) - 2*(-2) - 1 = 1 -> log(1 + e^-1); pair 1: 0 - 1 = -1 -> log(1 + e^1)
    expected = torch.tensor([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))], dtype=torch.float64)
    assert (losses - expected).abs().max() < 1e-12, f"max_diff {(losses - expected).abs().max()}"
    assert torch.equal(r_c, torch.tensor([-2.0, -1.0], dtype=torch.float64))
    assert torch.equal(r_r, torch.tensor([-4.0, -1.0], dtype=torch.float64))


# ---- sequence log-probs vs a float64 gather ------------------------------------------------------------

def _tiny_model(seed=0, vocab=50):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      pad_token_id=0, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_logprobs_matches_float64_gather(padding_side, seed):
    model = _tiny_model(seed)
    ref = _tiny_model(seed).double()
    gen = torch.Generator().manual_seed(10 + seed)
    examples = []
    for _ in range(3):
        n_prompt, n_a, n_b = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((2, 9), (1, 6), (1, 6)))
        ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
        examples.append({"prompt_ids": ids(n_prompt), "chosen_ids": ids(n_a), "rejected_ids": ids(n_b)})
    batch = dpo.collate_pairs(examples, pad_token_id=0, padding_side=padding_side)
    got = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    got_avg = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], average=True)
    expected, expected_avg = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for e in examples:  # each sequence alone, unpadded, in float64
            seq = torch.tensor([e["prompt_ids"] + e[key]])
            with torch.no_grad():
                logp = torch.log_softmax(ref(seq).logits[0, :-1], dim=-1)  # (T-1, V)
            tok = logp.gather(-1, seq[0, 1:, None]).squeeze(-1)[len(e["prompt_ids"]) - 1:]
            expected.append(tok.sum())
            expected_avg.append(tok.mean())
    expected, expected_avg = torch.stack(expected), torch.stack(expected_avg)
    diff = (got.double() - expected).abs().max().item()
    assert got.shape == (6,) and diff < 1e-4, f"max_diff {diff}"
    diff = (got_avg.double() - expected_avg).abs().max().item()
    assert diff < 1e-4, f"average: max_diff {diff}"


def test_sft_weight_adds_the_mean_nll_of_the_chosen_tokens():
    model, ref = _tiny_model(3), _tiny_model(4)
    ref64 = _tiny_model(3).double()
    gen = torch.Generator().manual_seed(7)
    examples = [{"prompt_ids": torch.randint(1, 50, (4,), generator=gen).tolist(),
                 "chosen_ids": torch.randint(1, 50, (n,), generator=gen).tolist(),
                 "rejected_ids": torch.randint(1, 50, (3,), generator=gen).tolist()} for n in (2, 5)]
    batch = dpo.collate_pairs(examples, pad_token_id=0)
    plain = dpo.make_loss_fn(dpo.PreferenceConfig("dpo"), ref)(model, batch)[0]
    with_sft = dpo.make_loss_fn(dpo.PreferenceConfig("dpo", sft_weight=0.5), ref)(model, batch)[0]
    nll = []  # every chosen token's -log p, float64, each sequence alone
    for e in examples:
        seq = torch.tensor([e["prompt_ids"] + e["chosen_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(ref64(seq).logits[0, :-1], dim=-1)
        nll += (-logp.gather(-1, seq[0, 1:, None]).squeeze(-1)[len(e["prompt_ids"]) - 1:]).tolist()
    expected = 0.5 * sum(nll) / len(nll)  # mean over the 7 chosen tokens of the batch
    assert abs((with_sft - plain).item() - expected) < 1e-4, ((with_sft - plain).item(), expected)


def test_token_logprobs_matches_naive():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 7, 11, generator=gen) * 5
    ids = torch.randint(0, 11, (3, 7), generator=gen)
    naive = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    diff = (dpo.token_logprobs(logits, ids).double() - naive).abs().max().item()
    assert diff < 1e-5, f"max_diff {diff}"


def test_token_kl_matches_float64():
    gen = torch.Generator().manual_seed(6)
    p, q = torch.randn(2, 4, 9, generator=gen), torch.randn(2, 4, 9, generator=gen)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    expected = torch.nn.functional.kl_div(torch.log_softmax(q.double(), -1), torch.log_softmax(p.double(), -1),
                                          log_target=True, reduction="none").sum(-1)[mask].mean()
    diff = abs(dpo.token_kl(p, q, mask).item() - expected.item())
    assert diff < 1e-6, f"max_diff {diff}"


# ---- data, tokenization, training -----------------------------------------------------------------------

def test_preference_pairs_are_deterministic_checkable_and_held_out():
    a = dpo.make_preference_pairs(60, "train", seed=3)
    assert a == dpo.make_preference_pairs(60, "train", seed=3)
    assert a != dpo.make_preference_pairs(60, "train", seed=4)
    test_prompts = {p.prompt for p in dpo.make_preference_pairs(60, "test", seed=3)}
    assert not test_prompts & {p.prompt for p in a}
    for p, task in zip(a, make_tasks(60, "train", seed=3)):
        assert p.prompt == task.prompt and p.chosen == task.reply, (p, task)
        assert check_answer(task, p.chosen) and not check_answer(task, p.rejected), p
    assert {p.family for p in a} == set(dpo.CORRUPTIONS)


def test_tokenize_and_collate_with_course_tokenizer():
    from transformers import AutoTokenizer
    from course_utils.models import COURSE_TINY_DIR

    tok = AutoTokenizer.from_pretrained(COURSE_TINY_DIR)
    pairs = dpo.make_preference_pairs(4, "train", seed=0)
    ex = dpo.tokenize_pairs(tok, pairs)
    ex_trl = dpo.tokenize_pairs(tok, pairs, trl_style=True)
    for p, e, e_trl in zip(pairs, ex, ex_trl):
        full = tok.apply_chat_template([{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.chosen}],
                                       tokenize=False)
        assert tok.decode(e_trl["prompt_ids"] + e_trl["chosen_ids"]) == full
        assert tok.decode(e["chosen_ids"]) == p.chosen + "<|im_end|>"
        assert tok.decode(e["rejected_ids"]) == p.rejected + "<|im_end|>"
    for side in ("left", "right"):
        b = dpo.collate_pairs(ex, tok.pad_token_id, padding_side=side)
        assert b["input_ids"].shape[0] == 8
        lens = [len(e["chosen_ids"]) for e in ex] + [len(e["rejected_ids"]) for e in ex]
        assert b["loss_mask"].sum(1).tolist() == lens
        assert torch.equal(b["attention_mask"].sum(1), torch.tensor([len(e["prompt_ids"]) + n for e, n in zip(ex + ex, lens)]))


@pytest.mark.parametrize("method", ["dpo", "simpo"])
def test_training_steps_raise_preference_on_a_fixed_batch(method):
    model = _tiny_model(3)
    ref = dpo.frozen_copy(model)
    gen = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
    batch = dpo.collate_pairs([{"prompt_ids": ids(4), "chosen_ids": ids(3), "rejected_ids": ids(3)} for _ in range(4)], 0)
    cfg = dpo.PreferenceConfig(method=method, beta=0.5 if method == "dpo" else 2.0, gamma=0.5)
    loss_fn = dpo.make_loss_fn(cfg, ref if method == "dpo" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first, _ = loss_fn(model, batch)
    for _ in range(15):
        loss, metrics = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() - 0.1, (first.item(), loss.item())
    assert metrics["acc"] == 1.0 and metrics["margin"] > 0
    assert all(p.grad is None for p in ref.parameters())


# ---- bad inputs ---------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got 0"):
        dpo.dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got -0.1"):
        dpo.simpo_loss(x, x, beta=-0.1, gamma=0.5)
    with pytest.raises(ValueError, match=r"batch sizes must match.*ref_rejected_logps': \(2,\)"):
        dpo.dpo_loss(x, x, x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"policy_chosen_logps must be a 1-D tensor"):
        dpo.dpo_loss(torch.zeros(3, 2), x, x, x)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\), got 0.5"):
        dpo.dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0, got -1"):
        dpo.simpo_loss(x, x, beta=2.0, gamma=-1)
    model = _tiny_model()
    batch = dpo.collate_pairs([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}], 0)
    empty = batch["loss_mask"].clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"loss_mask marks no completion token .* rows \[1\]"):
        dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], empty)
    with pytest.raises(ValueError, match=r"same shape"):
        dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"][:, :-1], batch["loss_mask"])
    with pytest.raises(ValueError, match=r"pair.rejected is empty"):
        from transformers import AutoTokenizer
        from course_utils.models import COURSE_TINY_DIR
        dpo.tokenize_pair(AutoTokenizer.from_pretrained(COURSE_TINY_DIR), dpo.PreferencePair("What is 1 + 1?", "2", "", "addition"))
    with pytest.raises(ValueError, match=r"padding_side must be 'left' or 'right', got 'middle'"):
        dpo.collate_pairs([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}], 0, padding_side="middle")
    with pytest.raises(ValueError, match=r"method 'dpo' needs ref_model"):
        dpo.make_loss_fn(dpo.PreferenceConfig("dpo"))
    with pytest.raises(ValueError, match=r"cfg.method must be one of \['dpo', 'simpo'\], got 'ppo'"):
        dpo.make_loss_fn(dpo.PreferenceConfig("ppo"))
    with pytest.raises(ValueError, match=r"cfg.sft_weight must be a number >= 0, got -1"):
        dpo.make_loss_fn(dpo.PreferenceConfig("dpo", sft_weight=-1), _tiny_model())
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test'"):
        dpo.make_preference_pairs(3, "dev")


def test_style_pairs_and_parse_reply():
    pairs = dpo.make_preference_pairs(40, "train", seed=2, template="Answer: {}", style_fraction=0.5)
    sources = {p.source for p in pairs}
    assert sources == {"style", "wrong"}, sources
    for p in pairs:
        ok, ans = dpo.parse_reply(p.chosen, "Answer: {}")
        assert ok and p.chosen == f"Answer: {ans}"
        ok_r, ans_r = dpo.parse_reply(p.rejected, "Answer: {}")
        assert (p.source == "style") == (not ok_r) and (p.source != "style" or ans_r == ans)
    assert dpo.parse_reply("  42 ", "{}") == (True, "42")
    assert dpo.parse_reply("Answer:", "Answer: {}") == (False, "Answer:")
    with pytest.raises(ValueError, match=r"template must be a string with exactly one '\{\}'"):
        dpo.make_preference_pairs(3, template="Answer")
    with pytest.raises(ValueError, match=r"style_fraction must be in \[0, 1\], got 2"):
        dpo.make_preference_pairs(3, style_fraction=2)


# ---- online DPO: pairs sampled from the policy ------------------------------------------------------------

def _sft_model():
    from course_utils import load_model
    from course_utils.models import REPO_ROOT

    return load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")


def test_sampled_pairs_put_one_of_the_models_right_samples_over_a_wrong_one():
    from course_utils.grpo import sample_completions

    model, tok = _sft_model()
    tasks = make_tasks(16, "train", seed=7, families=["addition"])
    pairs = dpo.sampled_pairs(model, tok, tasks, 4, generator=torch.Generator().manual_seed(0))
    assert pairs, "the SFT model samples both right and wrong sums on some of 16 addition prompts"
    rollout = sample_completions(model, tok, [t.prompt for t in tasks], 4, 40, generator=torch.Generator().manual_seed(0))
    groups = {t.prompt: (t, [s.strip() for s in rollout.texts[4 * i:4 * i + 4]]) for i, t in enumerate(tasks)}
    for p in pairs:
        task, samples = groups[p.prompt]
        assert p.source == "sampled" and p.chosen in samples and p.rejected in samples, (p, samples)
        assert task.answer == p.chosen.split(" so ")[-1] and task.answer != p.rejected.split(" so ")[-1], p
    n_mixed = sum(any(check_answer(t, s) for s in ss) and not all(check_answer(t, s) for s in ss) for t, ss in groups.values())
    assert len(pairs) == n_mixed


def test_online_batches_are_fresh_per_step_and_reproducible():
    model, tok = _sft_model()
    tasks = make_tasks(500, "train", seed=0, families=["addition"])
    batch_fn = dpo.make_online_pair_batch_fn(model, tok, tasks, 4, seed=1)
    b0, b1 = batch_fn(0), batch_fn(1)
    assert b0["input_ids"].shape[0] == 8 and b0["loss_mask"].any(1).all()
    assert torch.equal(batch_fn(0)["input_ids"], b0["input_ids"])  # same step, same weights: same batch (resume)
    assert tok.batch_decode(b0["input_ids"]) != tok.batch_decode(b1["input_ids"])
    never = [Task("addition", t.prompt, "never", t.work) for t in tasks[:8]]  # no sample can be right
    assert dpo.sampled_pairs(model, tok, never, 2) == []
    with pytest.raises(RuntimeError, match=r"only 0 of 4 pairs after 2 draws"):
        dpo.make_online_pair_batch_fn(model, tok, never, 4, max_draws=2)(0)
    with pytest.raises(ValueError, match=r"group_size must be an int >= 2 \(a pair needs two samples\), got 1"):
        dpo.sampled_pairs(model, tok, tasks[:2], 1)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int, got 0"):
        dpo.make_online_pair_batch_fn(model, tok, tasks, 0)


# ---- per-pair / per-task values behind the reported means ----------------------------------------------------

def test_evaluate_pairs_per_pair_values_match_sequence_logprobs():
    model, ref = _tiny_model(4), _tiny_model(5)
    gen = torch.Generator().manual_seed(4)
    ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
    examples = [{"prompt_ids": ids(3 + i % 2), "chosen_ids": ids(2 + i % 3), "rejected_ids": ids(3)} for i in range(7)]
    out = dpo.evaluate_pairs(model, examples, 0, ref_model=ref, beta=0.3, batch_size=3, per_pair=True)
    b = dpo.collate_pairs(examples, 0)
    with torch.no_grad():
        pc, pr = dpo.sequence_logprobs(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).chunk(2)
        rc, rr = dpo.sequence_logprobs(ref, b["input_ids"], b["attention_mask"], b["loss_mask"]).chunk(2)
        ac, ar = dpo.sequence_logprobs(model, b["input_ids"], b["attention_mask"], b["loss_mask"], average=True).chunk(2)
    margin = 0.3 * ((pc - rc) - (pr - rr))
    torch.testing.assert_close(torch.tensor(out["logp_chosen_each"]), pc, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["logp_rejected_each"]), pr, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["margin_each"]), margin, atol=1e-5, rtol=0)
    assert out["avg_correct"] == (ac > ar).int().tolist() and out["dpo_correct"] == (margin > 0).int().tolist()
    assert abs(out["dpo_acc"] - sum(out["dpo_correct"]) / 7) < 1e-6 and abs(out["avg_acc"] - sum(out["avg_correct"]) / 7) < 1e-6
    assert "dpo_correct" not in dpo.evaluate_pairs(model, examples, 0, per_pair=True)
    assert "avg_correct" not in dpo.evaluate_pairs(model, examples, 0)


def test_accuracy_table_hand_worked():
    tasks = [Task("count", "p1", "1"), Task("count", "p2", "1"), Task("count", "p3", "2"), Task("count", "p4", "0"),
             Task("addition", "q1", "5", "2+3"), Task("addition", "q2", "7", "3+4")]
    table = dpo.accuracy_table({"A": {"correct": [1, 1, 0, 0, 1, 0]}, "B": {"correct": [1, 1, 1, 1, 0, 0]}}, tasks)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert list(rows) == ["addition", "count", "all"]
    # family, n, majority rate (count: "1" is 2 of 4; addition: each answer once; all: (2 + 1) / 6), A, [CI], B, [CI]
    assert rows["count"][:4] == ["count", "4", "0.500", "0.500"] and rows["count"][6] == "1.000"
    assert rows["addition"][:4] == ["addition", "2", "0.500", "0.500"] and rows["addition"][6] == "0.000"
    assert rows["all"][:4] == ["all", "6", "0.500", "0.500"] and rows["all"][6] == "0.667"
    from course_utils.stats import binomial_ci
    low, high = binomial_ci(4, 6)
    assert " ".join(rows["all"][7:9]) == f"[{low:.2f}, {high:.2f}]"
    with pytest.raises(ValueError, match=r"results\['A'\] must be an evaluate_replies output on these 6 tasks"):
        dpo.accuracy_table({"A": {"correct": [1]}}, tasks)
    with pytest.raises(ValueError, match="results must be a non-empty dict"):
        dpo.accuracy_table({}, tasks)
    with pytest.raises(ValueError, match="tasks must be a non-empty list"):
        dpo.accuracy_table({"A": {"correct": []}}, [])
