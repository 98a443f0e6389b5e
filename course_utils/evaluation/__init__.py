"""Evaluating a model (lecture 12): accuracy with its error bar and baseline, pass@k, the lm-eval harness on the
course tasks, model judges and their biases, and test-set contamination."""

from .accuracy import (accuracy_table, correct_by_family, distinct_tasks, family_accuracy,  # noqa: F401
                       majority_baselines, pass_at_k)
from .contamination import RULES, flag_rates, ngram_index, overlap_ratios, word_ngrams  # noqa: F401
from .harness import TASKS_DIR, run_harness  # noqa: F401
from .judge import (JUDGE_TEMPLATE, PREAMBLE, both_orders, cohen_kappa, judge_prompt, lengthen,  # noqa: F401
                    likelihood_margins, pairwise_margins, position_stats)
