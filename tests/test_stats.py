"""stats and book: intervals against hand-worked values and scipy, lesson checks that can fail, the book round trip."""

import json
import math
import random

import pytest
import scipy.stats

from course_utils import book, data, stats


def test_wilson_interval_hand_worked():
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71669, half 1.41599 * sqrt(0.016 + 0.0096040) = 0.22661
    low, high = stats.binomial_ci(8, 10)
    assert low == pytest.approx(0.49008, abs=1e-4) and high == pytest.approx(0.94330, abs=1e-4)
    assert stats.binomial_ci(0, 20)[0] == 0.0 and 0 < stats.binomial_ci(0, 20)[1] < 0.2


def test_wilson_interval_matches_scipy_on_random_counts():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(1, 500)
        k = rng.randint(0, n)
        level = rng.choice([0.8, 0.9, 0.95, 0.99])
        ref = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
        assert stats.binomial_ci(k, n, level) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_paired_difference_against_scipy_ttest():
    rng = random.Random(1)
    a = [rng.random() < 0.6 for _ in range(300)]
    b = [x if rng.random() < 0.8 else (rng.random() < 0.7) for x in a]
    d = stats.paired_difference(a, b)
    ref = scipy.stats.ttest_rel([float(x) for x in b], [float(x) for x in a])
    assert d.diff == pytest.approx(sum(b) / 300 - sum(a) / 300)
    assert d.z == pytest.approx(ref.statistic, rel=1e-9)


def test_unpaired_difference_is_welch():
    rng = random.Random(2)
    a, b = [rng.gauss(0, 1) for _ in range(7)], [rng.gauss(1, 2) for _ in range(9)]
    ref = scipy.stats.ttest_ind(b, a, equal_var=False)
    assert stats.unpaired_difference(a, b).z == pytest.approx(ref.statistic, rel=1e-9)


def test_check_gain_fails_on_noise_outside_ci(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    same = [1, 0] * 50
    flipped = [0, 1] * 50  # same accuracy, different problems: no gain
    with pytest.raises(AssertionError, match="standard errors"):
        stats.check_gain(same, flipped)
    stats.check_gain([0] * 60 + [1] * 40, [1] * 100)  # +0.6 on 100 problems: passes


def test_check_gain_only_reports_in_ci(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    stats.check_gain([1, 0, 1, 0], [0, 1, 0, 1])
    assert "too small to show this effect" in capsys.readouterr().out


def test_check_above_and_seeds(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    stats.check_above([1] * 90 + [0] * 10, 0.5, baseline_name="majority answer")
    with pytest.raises(AssertionError):
        stats.check_above([1] * 52 + [0] * 48, 0.5)
    stats.check_seeds([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    with pytest.raises(AssertionError):
        stats.check_seeds([1.0, 1.5, 0.5], [1.1, 1.6, 0.6])


@pytest.mark.parametrize("call, message", [
    (lambda: stats.binomial_ci(3, 0), "n must be a positive int"),
    (lambda: stats.binomial_ci(11, 10), "successes must be in"),
    (lambda: stats.binomial_ci(1, 10, level=1.5), "level must be in"),
    (lambda: stats.paired_difference([1, 0], [1]), "same length"),
    (lambda: stats.majority_baseline([]), "non-empty"),
    (lambda: book.record("", 1.0), "key must be"),
    (lambda: book.record("k", float("nan")), "must be finite"),
    (lambda: book.compare_with_book("../x"), "notebook must be"),
])
def test_bad_input_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_book_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(book, "BOOK_DIR", tmp_path)
    monkeypatch.setattr(book, "_live", {})
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    monkeypatch.setenv("COURSE_WRITE_BOOK", "1")
    book.record("acc", 0.80, 0.03)
    book.record("params", 1234)
    book.compare_with_book("99_demo")
    stored = json.loads((tmp_path / "99_demo.json").read_text())
    assert stored == {"profile": "cpu", "metrics": {"acc": {"value": 0.8, "se": 0.03},
                                                     "params": {"value": 1234.0, "se": None}}}
    monkeypatch.delenv("COURSE_WRITE_BOOK")
    book.record("acc", 0.70, 0.03)  # 0.1 apart, allowed 2 * sqrt(2) * 0.03 = 0.085: differs
    book.record("params", 1234)
    rows = book.compare_with_book("99_demo")
    assert rows["acc"]["agrees"] is False and rows["params"]["agrees"] is True
    book.record("acc", 0.75, 0.03)
    assert book.compare_with_book("99_demo")["acc"]["agrees"] is True
    assert "differ by more than the noise" in capsys.readouterr().out


def test_task_answers_are_balanced():
    """No family is won by always giving one answer: every answer below 40 %; counts spread over 0, 1, 2, 3+."""
    for family in data.TASK_FAMILIES:
        for split in ("train", "test"):
            answers = [t.answer for t in data.make_tasks(2000, split, seed=3, families=[family])]
            top, share = stats.majority_baseline(answers)
            assert share < 0.4, f"{family}/{split}: answer {top!r} is {share:.0%} of the tasks"
    counts = [int(t.answer) for t in data.make_tasks(2000, "train", seed=3, families=["count"])]
    for k in (0, 1, 2):
        assert 0.15 < counts.count(k) / 2000 < 0.35
    assert 0.15 < sum(c >= 3 for c in counts) / 2000 < 0.35
    for t in data.make_tasks(200, "test", seed=4, families=["count"]):
        letter, text = t.prompt.split("letter ")[1].split(" appear in ")
        assert t.answer == str(text.rstrip("?").count(letter))
    assert math.isclose(sum(counts) / 2000, 1.6, abs_tol=0.25)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 2, 1), (6, 2, 3), (7, 3, 4), (8, 5, 4), (4, 4, 2), (6, 1, 6)])
def test_pass_at_k_equals_enumerating_every_subset(n, c, k):
    import itertools

    from course_utils.evaluation import pass_at_k

    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert abs(pass_at_k(n, c, k) - brute) < 1e-12


def test_pass_at_k_bad_arguments():
    from course_utils.evaluation import pass_at_k

    with pytest.raises(ValueError, match="c must be"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 5)


def test_seed_interval_uses_student_t():
    mean, se, half = stats.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(se - 1 / math.sqrt(3)) < 1e-12
    assert abs(half / se - 4.303) < 1e-3  # t(0.975, 2 df) from the tables
    with pytest.raises(ValueError, match="values"):
        stats.seed_interval([1.0])
