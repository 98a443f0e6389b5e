"""The problems of one course task family as a datasets.DatasetDict with a "test" split (lm-eval's custom_dataset).

lm-eval calls load_family(**metadata, **dataset_kwargs): `family` comes from the task's YAML, `n_per_family` and
`seed` from the metadata given to the TaskManager (course_utils.evaluation.harness.run_harness passes them), so the
harness sees exactly the problems of evaluation.distinct_tasks(data.make_eval_tasks(n_per_family, seed=seed)), family by
family (repeated prompts dropped).
"""

from datasets import Dataset, DatasetDict

from course_utils.data import make_eval_tasks
from course_utils.evaluation import distinct_tasks


def load_family(family: str, n_per_family: int = 100, seed: int = 1, **_) -> DatasetDict:
    tasks = [t for t in distinct_tasks(make_eval_tasks(n_per_family, seed=seed)) if t.family == family]
    return DatasetDict({"test": Dataset.from_list([{"prompt": t.prompt, "answer": t.answer} for t in tasks])})
