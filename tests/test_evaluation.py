"""Lecture 12: the lm-eval harness equals the course's evaluator; eval-size planning, judge statistics and
contamination measures against hand-worked values and simulation."""

import random

import pytest
import torch

import course_utils as cu
from course_utils.data import make_eval_tasks
from course_utils.evaluation import run_harness
from course_utils.sft import evaluate_tasks

SFT = str(cu.env.REPO_ROOT / "data" / "course-tiny-sft")


@pytest.mark.parametrize("name", ["course-tiny", SFT])
def test_harness_equals_our_evaluator_reply_by_reply(name):
    """lm-eval (HFLM generate_until, YAML tasks, regex filter, exact_match) and sft.evaluate_tasks: same replies,
    same 0/1 per problem, same accuracy, on problems drawn with a fresh seed."""
    seed = random.Random().randrange(10_000)
    model, tok = cu.load_model(name, device="cpu")
    tasks = make_eval_tasks(12, seed=seed)
    ours = evaluate_tasks(model, tok, tasks)
    res = run_harness(model, tok, n_per_family=12, seed=seed)
    for family in res["correct"]:
        mine = [(c, int(ok)) for t, c, ok in zip(tasks, ours.completions, ours.correct) if t.family == family]
        assert [c for c, _ in mine] == res["replies"][family], f"seed {seed}, {family}: replies differ"
        assert [ok for _, ok in mine] == res["correct"][family], f"seed {seed}, {family}: grading differs"
        acc, se = res["per_task"][family]
        assert acc == pytest.approx(ours.per_family[family])
        assert se == pytest.approx((acc * (1 - acc) / 11) ** 0.5)  # lm-eval's sample SE: n - 1 in the denominator


def test_harness_bad_families():
    model, tok = cu.load_model("course-tiny", device="cpu")
    with pytest.raises(ValueError, match="families must be"):
        run_harness(model, tok, families=["poetry"])
