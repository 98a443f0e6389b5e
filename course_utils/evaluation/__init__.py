"""Evaluating a model (lecture 12): accuracy with its error bar and baseline, pass@k, the lm-eval harness on the
course tasks, an LLM judge and its biases, and test-set contamination."""

from .accuracy import (accuracy_table, correct_by_family, family_accuracy, majority_baselines,  # noqa: F401
                       pass_at_k)
from .harness import TASKS_DIR, run_harness  # noqa: F401
