"""The course's task families run through EleutherAI's lm-evaluation-harness (lm-eval), offline.

The tasks are YAML files in lm_eval_tasks/ (one per family plus the group `course_tasks`); their problems are built
by course_docs.load_family, so the harness and sft.evaluate_tasks see the same problems.

    res = run_harness(model, tokenizer, n_per_family=100)   # {"per_task": {...}, "correct": {family: [0/1, ...]}}

From a shell, on any local or hub model (a GPU makes it fast):
    lm_eval --model hf --model_args pretrained=Qwen/Qwen3-0.6B --include_path course_utils/evaluation/lm_eval_tasks \
        --tasks course_tasks --apply_chat_template --metadata '{"n_per_family": 200}'
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ..checks import check_int
from ..data import TASK_FAMILIES

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"


def run_harness(model, tokenizer, *, families: list[str] | None = None, n_per_family: int = 100, seed: int = 1,
                batch_size: int = 64, max_gen_toks: int = 40) -> dict:
    """Exact match of greedy chat replies on the course tasks, computed by lm-eval (generate_until, regex filter).

    model, tokenizer: a transformers causal LM already in memory (lm-eval's HFLM wraps it).
    Returns {"per_task": {family: (accuracy, stderr)}, "correct": {family: [0/1 per problem, in problem order]},
    "replies": {family: [raw reply per problem]}} -- the problems are
    distinct_tasks(data.make_eval_tasks(n_per_family, seed=seed)): n_per_family draws, repeated prompts dropped.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    families = list(TASK_FAMILIES) if families is None else families
    unknown = [f for f in families if f not in TASK_FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {list(TASK_FAMILIES)}, got {families!r}")
    check_int("n_per_family", n_per_family)
    check_int("batch_size", batch_size)
    check_int("max_gen_toks", max_gen_toks)
    with contextlib.redirect_stderr(io.StringIO()):  # "`pretrained` model kwarg is not of type `str`": intended
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_gen_toks=max_gen_toks,
                  device=str(next(model.parameters()).device))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                          metadata={"n_per_family": n_per_family, "seed": seed})
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars and notes on custom datasets
        out = simple_evaluate(model=lm, tasks=[f"course_{f}" for f in families], task_manager=manager,
                              apply_chat_template=True, log_samples=True, verbosity="ERROR")
    per_task, correct, replies = {}, {}, {}
    for f in families:
        res = out["results"][f"course_{f}"]
        per_task[f] = (float(res["exact_match,final_answer"]), float(res["exact_match_stderr,final_answer"]))
        samples = sorted(out["samples"][f"course_{f}"], key=lambda s: s["doc_id"])
        correct[f] = [int(s["exact_match"]) for s in samples]
        replies[f] = [s["resps"][0][0] for s in samples]
    return {"per_task": per_task, "correct": correct, "replies": replies}
