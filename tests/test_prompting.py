"""Lecture 13 prompting: few-shot prompts hold only train-split examples of the task's family, in pretraining's prose;
icl_accuracy grades what a model writes (a stub model with known replies, and course-tiny against sft.evaluate_tasks);
the direct/worked split of the SFT model."""

import random

import pytest
import torch
from transformers import AutoTokenizer

import course_utils as cu
from course_utils import prompting as P
from course_utils.data import TASK_FAMILIES, Task, make_eval_tasks, task_split
from course_utils.models import COURSE_TINY_DIR
from course_utils.sft import PROMPT_FORMATS, evaluate_tasks

SFT = str(cu.env.REPO_ROOT / "data" / "course-tiny-sft")


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(COURSE_TINY_DIR)


def _parts(prompt: str) -> list[str]:
    return prompt.split(P.SEPARATOR)


@pytest.mark.parametrize("family", list(TASK_FAMILIES))
@pytest.mark.parametrize("shots", [0, 1, 4, 8])
def test_few_shot_prompt_uses_train_examples_of_the_family(family, shots):
    for task in make_eval_tasks(5, "test", seed=7, families=[family]):
        prompt = P.few_shot_prompt(task, shots, seed=3)
        parts = _parts(prompt)
        assert len(parts) == shots + 1, prompt
        assert parts[-1] == f"Question: {task.prompt} Answer:"
        assert prompt.count(task.prompt) == 1, f"the test prompt is shown more than once:\n{prompt}"
        exemplars = P.sample_exemplars(task, shots, seed=3)
        assert [P.example_text(t) for t in exemplars] == parts[:-1]
        assert all(t.family == family and task_split(t) == "train" for t in exemplars)
        assert len({t.prompt for t in exemplars}) == shots, "examples repeat"
        for t, part in zip(exemplars, parts):
            assert part == f"Question: {t.prompt} Answer: {t.answer}."  # data.task_as_text's prose form


def test_few_shot_prompt_excludes_a_train_task_itself():
    """Asked about a train-split task, the examples never include that task."""
    for task in make_eval_tasks(40, "train", seed=0, families=["reverse"]):
        assert all(t.prompt != task.prompt for t in P.sample_exemplars(task, 8, seed=0))
        assert P.few_shot_prompt(task, 8).count(task.prompt) == 1


def test_zero_shot_is_the_prose_format_and_draws_are_seeded(tok):
    task = make_eval_tasks(1, seed=2, families=["sort"])[0]
    assert P.few_shot_prompt(task, 0) == PROMPT_FORMATS["prose"](tok, task.prompt)
    assert P.few_shot_prompt(task, 4, seed=1) == P.few_shot_prompt(task, 4, seed=1)
    assert P.few_shot_prompt(task, 4, seed=1) != P.few_shot_prompt(task, 4, seed=2)
    other = make_eval_tasks(2, seed=2, families=["sort"])[1]
    assert P.sample_exemplars(task, 4) != P.sample_exemplars(other, 4), "every task should get its own examples"


def test_worked_examples_show_work_then_the_answer():
    task = make_eval_tasks(3, seed=4, families=["addition"])[2]
    parts = _parts(P.few_shot_prompt(task, 4, worked=True, seed=5))
    for t, part in zip(P.sample_exemplars(task, 4, seed=5), parts):
        a, b = (int(x) for x in t.prompt.removeprefix("What is ").removesuffix("?").split(" + "))
        assert part == f"Question: {t.prompt} Answer: {cu.data.addition_work(a, b)} so {t.answer}."
        assert part.endswith(f" so {t.answer}.")
    assert parts[-1] == f"Question: {task.prompt} Answer:", "the question itself shows no work"
    assert P.WORKED_FAMILIES == ("addition",)


def test_bad_arguments():
    task = make_eval_tasks(1, seed=0, families=["addition"])[0]
    with pytest.raises(ValueError, match="shots must be a non-negative int, got -1"):
        P.few_shot_prompt(task, -1)
    with pytest.raises(TypeError, match="shots must be"):
        P.few_shot_prompt(task, 2.0)
    with pytest.raises(ValueError, match="task.family must be one of .* got 'poetry'"):
        P.few_shot_prompt(Task("poetry", "Write a poem.", "roses"), 1)
    with pytest.raises(TypeError, match="task must be a data.Task, got str"):
        P.few_shot_prompt("What is 1 + 2?", 1)
    with pytest.raises(ValueError, match="worked=True needs a family whose tasks show work .* 'sort' task"):
        P.few_shot_prompt(make_eval_tasks(1, seed=0, families=["sort"])[0], 2, worked=True)
    with pytest.raises(TypeError, match="worked must be a bool"):
        P.few_shot_prompt(task, 2, worked="yes")
    reverse = make_eval_tasks(1, seed=0, families=["reverse"])[0]
    with pytest.raises(ValueError, match="shots=500 is more than the distinct train-split 'reverse' tasks"):
        P.few_shot_prompt(reverse, 500)
    with pytest.raises(ValueError, match="tasks must be a non-empty list of data.Task"):
        P.icl_accuracy(None, None, [], 1, seed=0)


# ---- grading, with a stub model whose replies are known -----------------------------------------

class ScriptedLM(torch.nn.Module):
    """A stand-in for a causal LM: greedy 'generation' looks up the reply to the last question in the prompt."""

    def __init__(self, tokenizer, replies: dict[str, str], n_ctx: int = 256):
        super().__init__()
        self.tok, self.replies = tokenizer, replies
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"max_position_embeddings": n_ctx})()
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, eos_token_id, pad_token_id):
        assert not do_sample and (attention_mask[:, -1] == 1).all(), "greedy, left-padded"
        self.calls.append((max_new_tokens, self.training))
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tok.decode(ids[mask.bool()])
            question = prompt.rpartition("Question: ")[2].removesuffix(" Answer:")
            new = self.tok(self.replies[question], add_special_tokens=False)["input_ids"][:max_new_tokens]
            end = next((i + 1 for i, t in enumerate(new) if t in eos_token_id), len(new))  # stop after a stop token
            rows.append(ids.tolist() + new[:end])
        width = max(map(len, rows))
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])  # (B, T + new)


def test_icl_accuracy_grades_what_the_model_writes(tok):
    tasks = [Task("addition", "What is 1 + 2?", "3"), Task("addition", "What is 40 + 2?", "42"),
             Task("sort", "Sort these numbers: 3 1 2.", "1 2 3"), Task("sort", "Sort these numbers: 9 8 7.", "7 8 9"),
             Task("format", "Write the word cat in capital letters inside brackets.", "[CAT]"),
             Task("addition", "What is 5 + 5?", "10")]
    replies = {tasks[0].prompt: " 3.<|endoftext|>Question: What is 9 + 9? Answer: 18.",  # stops at EOS
               tasks[1].prompt: " 42.\nQuestion: What",                                 # stops at a newline
               tasks[2].prompt: " 1 2 3. Question: Sort",                               # stops at 'Question'
               tasks[3].prompt: " 7 9 8.",                                              # wrong
               tasks[4].prompt: " [CAT].",
               tasks[5].prompt: " 1+5=6 so 10."}                                        # graded on the final answer
    model = ScriptedLM(tok, replies)
    assert P.icl_accuracy(model, tok, tasks, 2, seed=0, batch_size=4) == [True, True, True, False, True, True]
    assert model.calls == [(20, False), (20, False)], "20 new tokens, in eval mode"
    assert model.training, "the model's mode is restored"
    assert P.complete(model, tok, [P.question_text(t) for t in tasks[:3]]) == ["3", "42", "1 2 3"]
    assert P.complete(model, tok, [P.question_text(tasks[1])], stop=()) == ["42.\nQuestion: What"]  # EOS only


def test_complete_refuses_prompts_past_the_context(tok):
    task = make_eval_tasks(1, seed=0, families=["sort"])[0]
    model = ScriptedLM(tok, {task.prompt: " 1."}, n_ctx=256)
    with pytest.raises(ValueError, match="prompts\\[0\\] has .* tokens; with max_new_tokens=20 .* context of 256"):
        P.icl_accuracy(model, tok, [task], 8, seed=0)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        P.complete(model, tok, ["Question:"], max_new_tokens=0)
    with pytest.raises(ValueError, match="stop must be a sequence of non-empty strings"):
        P.complete(model, tok, ["Question:"], stop="\n")


# ---- the course models ------------------------------------------------------------------------

def test_zero_shot_matches_the_prose_evaluation(tiny):
    """0 shots = sft.evaluate_tasks in prose: the same prompt, greedy, so the same 0/1 per task."""
    model, tok = tiny
    tasks = make_eval_tasks(4, seed=random.Random().randrange(10_000))
    ours = P.icl_accuracy(model, tok, tasks, 0, seed=0)
    theirs = evaluate_tasks(model, tok, tasks, prompt_format="prose").correct
    assert ours == theirs, [(t.prompt, a, b) for t, a, b in zip(tasks, ours, theirs) if a != b]


def test_course_tiny_sorts_with_examples(tiny):
    """Hand-checked: course-tiny sorts these test-split lists in prose, with and without examples."""
    model, tok = tiny
    tasks = make_eval_tasks(3, seed=1, families=["sort"])
    completions = P.complete(model, tok, [P.few_shot_prompt(t, 2, seed=0) for t in tasks])
    assert completions == [t.answer for t in tasks]
    assert P.icl_accuracy(model, tok, tasks, 4, seed=0) == [True] * 3


def test_direct_vs_worked_on_the_sft_model():
    model, tok = cu.load_model(SFT, device="cpu")
    task = make_eval_tasks(1, seed=0, families=["addition"])[0]
    assert P.chat_prompt(tok, task, " so ").endswith("<|im_start|>assistant\n so ")
    tasks = make_eval_tasks(8, seed=0, families=["addition"])
    r = P.direct_vs_worked(model, tok, tasks)
    assert set(r) == {"direct", "worked"} and all(len(v) == len(tasks) for v in r.values())
    assert sum(r["worked"]) >= 5, r  # the SFT model adds with its work about 93% of the time (data/README.md)
    with pytest.raises(ValueError, match="tasks must all show work .* got tasks of \\['sort'\\]"):
        P.direct_vs_worked(model, tok, make_eval_tasks(1, seed=0, families=["sort"]))
