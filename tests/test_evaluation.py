"""Lecture 12: the lm-eval harness equals the course's evaluator; eval-size planning, judge statistics and
contamination measures against hand-worked values and simulation."""

import copy
import math
import random

import pytest
import torch

import course_utils as cu
from course_utils.data import make_eval_tasks
from course_utils.evaluation import distinct_tasks, run_harness
from course_utils.sft import evaluate_tasks

SFT = str(cu.env.REPO_ROOT / "data" / "course-tiny-sft")


@pytest.mark.parametrize("name", ["course-tiny", SFT])
def test_harness_equals_our_evaluator_reply_by_reply(name):
    """lm-eval (HFLM generate_until, YAML tasks, regex filter, exact_match) and sft.evaluate_tasks: same replies,
    same 0/1 per problem, same accuracy, on problems drawn with a fresh seed."""
    seed = random.Random().randrange(10_000)
    model, tok = cu.load_model(name, device="cpu")
    tasks = distinct_tasks(make_eval_tasks(12, seed=seed))
    ours = evaluate_tasks(model, tok, tasks)
    res = run_harness(model, tok, n_per_family=12, seed=seed)
    for family in res["correct"]:
        mine = [(c, int(ok)) for t, c, ok in zip(tasks, ours.completions, ours.correct) if t.family == family]
        assert [c for c, _ in mine] == res["replies"][family], f"seed {seed}, {family}: replies differ"
        assert [ok for _, ok in mine] == res["correct"][family], f"seed {seed}, {family}: grading differs"
        acc, se = res["per_task"][family]
        n = len(mine)
        assert acc == pytest.approx(ours.per_family[family])
        assert se == pytest.approx((acc * (1 - acc) / (n - 1)) ** 0.5)  # lm-eval's sample SE: n - 1 in the denominator


def test_harness_bad_families():
    model, tok = cu.load_model("course-tiny", device="cpu")
    with pytest.raises(ValueError, match="families must be"):
        run_harness(model, tok, families=["poetry"])


# ---- eval-size planning ---------------------------------------------------------------------------

def test_problems_needed_hand_worked_and_simulated():
    from statistics import NormalDist

    from course_utils import stats

    z = 2 + NormalDist().inv_cdf(0.8)  # 2.8416
    assert stats.problems_needed(0.05, discordance=0.1) == math.ceil(z * z * (0.1 - 0.0025) / 0.0025)  # 315
    assert stats.problems_needed(0.05, p=0.5) == math.ceil(z * z * (0.25 + 0.55 * 0.45) / 0.0025)
    # simulate paired evaluations at the planned n: about 80 % reach 2 SE
    gen = torch.Generator().manual_seed(random.Random().randrange(10_000))
    gain, disc = 0.06, 0.2
    n = stats.problems_needed(gain, discordance=disc)
    u = torch.rand(4000, n, generator=gen, dtype=torch.float64)
    d = (u < (disc + gain) / 2).double() - ((u >= (disc + gain) / 2) & (u < disc)).double()
    share = float((d.mean(1) >= 2 * d.std(1) / n ** 0.5).double().mean())
    assert abs(share - 0.8) < 0.04, share
    assert stats.detection_power(n, gain, discordance=disc) == pytest.approx(0.8, abs=0.01)
    assert stats.gain_se(n, gain, discordance=disc) == pytest.approx(((disc - gain ** 2) / n) ** 0.5)


def test_resampled_power_matches_the_normal_approximation():
    from course_utils import stats

    rng = random.Random(3)
    a, b = [], []
    for _ in range(4000):  # disagree on 15 %: b wins 10 %, a wins 5 %
        u = rng.random()
        x = int(rng.random() < 0.6)
        a.append(0 if u < 0.10 else 1 if u < 0.15 else x)
        b.append(1 if u < 0.10 else 0 if u < 0.15 else x)
    gain = (sum(b) - sum(a)) / len(a)
    disc = sum(x != y for x, y in zip(a, b)) / len(a)
    n = stats.problems_needed(gain, discordance=disc)
    assert abs(stats.resampled_power(a, b, n, draws=3000, seed=1) - 0.8) < 0.04


def test_planning_bad_arguments():
    from course_utils import stats

    with pytest.raises(ValueError, match="exactly one of p"):
        stats.problems_needed(0.05)
    with pytest.raises(ValueError, match="discordance must be"):
        stats.problems_needed(0.05, discordance=0.01)
    with pytest.raises(ValueError, match="gain must be"):
        stats.detection_power(100, 0.0, p=0.5)


def test_eval_size_report_is_consistent():
    from course_utils.widgets import eval_size_report

    r = eval_size_report(400, 0.6, 0.04, 0.12)
    assert r["paired"]["se"] < r["unpaired"]["se"]
    assert r["paired"]["power"] > r["unpaired"]["power"]
    assert eval_size_report(r["paired"]["needed"], 0.6, 0.04, 0.12)["paired"]["power"] >= 0.8


# ---- judges -----------------------------------------------------------------------------------------

def test_cohen_kappa_equals_sklearn_on_random_labels():
    from sklearn.metrics import cohen_kappa_score

    from course_utils.evaluation import cohen_kappa

    rng = random.Random()
    for _ in range(20):
        labels = ["A", "B", "tie"][:rng.randint(2, 3)]
        a = [rng.choice(labels) for _ in range(rng.randint(5, 60))]
        b = [x if rng.random() < 0.5 else rng.choice(labels) for x in a]
        if len(set(a)) == 1 and set(a) == set(b):
            continue  # sklearn gives nan when both raters use a single label
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_position_stats_hand_worked():
    from course_utils.evaluation import both_orders, position_stats

    always_a = torch.tensor([[1.0, 2.0], [0.5, 0.1], [3.0, 1.0], [1.0, 1.5]])  # says A in both orders
    s = position_stats(always_a)
    assert s["says_A"][0] == 1 and s["accuracy"][0] == 0.5 and s["consistent"][0] == 0 and s["kappa"][0] == 0
    assert s["accuracy_swapped"][0] == 0.5  # margins 1-2 < 0, .5-.1 > 0, 3-1 > 0, 1-1.5 < 0
    perfect = both_orders(torch.tensor([0.3, 2.0, 0.1]))
    s = position_stats(perfect)
    assert s["accuracy"] == (1.0, 0.0) and s["says_A"][0] == 0.5 and s["consistent"][0] == 1 and s["kappa"][0] == 1
    with pytest.raises(ValueError, match="margins must be"):
        position_stats(torch.zeros(3))


def _pairs(n=3):
    from course_utils.dpo import PreferencePair

    return [PreferencePair(t.prompt, t.reply, t.reply + "1", t.family, "test")
            for t in make_eval_tasks(1, seed=random.Random().randrange(1000))[:n]]


def test_pairwise_margins_equal_one_unpadded_forward_per_prompt():
    from course_utils.evaluation import judge_prompt, pairwise_margins

    model, tok = cu.load_model(SFT, device="cpu")
    pairs = _pairs()
    got = pairwise_margins(model, tok, pairs, batch_size=4)  # batches mix lengths: left padding
    a_id, b_id = tok.encode("A", add_special_tokens=False)[0], tok.encode("B", add_special_tokens=False)[0]
    for i, p in enumerate(pairs):
        for j, (first, second) in enumerate(((p.chosen, p.rejected), (p.rejected, p.chosen))):
            text = tok.apply_chat_template([{"role": "user", "content": judge_prompt(p.prompt, first, second)}],
                                           tokenize=False, add_generation_prompt=True)
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1].double()
            assert got[i, j].item() == pytest.approx((logits[a_id] - logits[b_id]).item(), abs=1e-4)


def test_likelihood_margins_equal_float64_token_sums():
    from course_utils.dpo import tokenize_pair
    from course_utils.evaluation import likelihood_margins

    model, tok = cu.load_model(SFT, device="cpu")
    pairs = _pairs()
    got = likelihood_margins(model, tok, pairs)
    model64 = copy.deepcopy(model).double()
    for i, p in enumerate(pairs):
        ids = tokenize_pair(tok, p)
        sums = []
        for key in ("chosen_ids", "rejected_ids"):
            full = torch.tensor([ids["prompt_ids"] + ids[key]])
            with torch.no_grad():
                logp = model64(input_ids=full).logits[0, :-1].log_softmax(-1)
            start = len(ids["prompt_ids"])
            sums.append(sum(logp[t - 1, full[0, t]].item() for t in range(start, full.shape[1])))
        assert got[i].item() == pytest.approx(sums[0] - sums[1], abs=1e-3)


def test_lengthen_pads_only_the_named_reply():
    from course_utils.evaluation import PREAMBLE, lengthen

    pairs = _pairs(2)
    for which, other in (("chosen", "rejected"), ("rejected", "chosen")):
        out = lengthen(pairs, which)
        assert all(getattr(o, which) == PREAMBLE + getattr(p, which) and getattr(o, other) == getattr(p, other)
                   for o, p in zip(out, pairs))
    with pytest.raises(ValueError, match="which must be"):
        lengthen(pairs, "both")


# ---- contamination --------------------------------------------------------------------------------

def test_ngram_overlap_hand_worked():
    from course_utils.evaluation import flag_rates, ngram_index, overlap_ratios, word_ngrams

    assert word_ngrams("Reverse the word cat", 3) == [("reverse", "the", "word"), ("the", "word", "cat")]
    assert word_ngrams("two words", 3) == []
    index = ngram_index(["reverse the word dog. god", "the word cat is short"], 3)
    # "reverse the word" seen; "the word cat." is not "the word cat" (punctuation stays on the word); 1 of 3
    assert overlap_ratios(["Reverse the word cat. tac", "hi"], index, 3) == [pytest.approx(1 / 3), None]
    assert overlap_ratios(["the word cat is"], index, 3) == [1.0]
    rates = flag_rates([1.0, 0.2, None, 1.0], [True, True, False, False], "all")
    assert rates == {"detected": 0.5, "false_alarms": 0.5, "too_short": 0.25}
    assert flag_rates([1.0, 0.2, None, 0.0], [True, True, False, False], "any") == {
        "detected": 1.0, "false_alarms": 0.0, "too_short": 0.25}
    with pytest.raises(ValueError, match="rule must be"):
        flag_rates([1.0, 0.0], [True, False], "most")
    with pytest.raises(ValueError, match="leaked must mark"):
        flag_rates([1.0], [True])


def test_distinct_tasks_drops_repeated_prompts_only():
    tasks = make_eval_tasks(40, seed=random.Random().randrange(1000))
    out = distinct_tasks(tasks)
    assert len({t.prompt for t in out}) == len(out) == len({t.prompt for t in tasks})
    assert [t for t in tasks if t in out][:5] == out[:5]  # order kept
