"""GRPO (group relative policy optimization, 组相对策略优化) from scratch: each piece its own function, then a loop.

Shapes: N = prompts x group_size completions, C = completion length (padded), G = group_size.

    adv = group_advantages(rewards, group_size=8)                        # (N,)
    loss = grpo_loss(logps, old_logps, ref_logps, adv, completion_mask)  # scalar, same value as trl's GRPOTrainer

- losses: group advantages, clipped surrogate, k3 KL, the loss and its aggregations, DAPO's group filter, overlong
  penalty and truncation mask (pure functions);
- rollout: sampling completions from the policy and their log-probs;
- evaluate: held-out accuracy, greedy or with N samples (test-time compute), strict and lenient scoring, pass@k
  curves and per-problem coverage;
- training: the loop (train_grpo), its config and result, the GPU plan of a round;
- trl_compare: trl's GRPOTrainer log-probs and loss on our batch (the parity check of notebook 09).

References: Shao et al. 2024 (DeepSeekMath, GRPO); DeepSeek-AI 2025 (DeepSeek-R1, R1-Zero);
Liu et al. 2025 (Understanding R1-Zero-Like Training: Dr. GRPO); Yu et al. 2025 (DAPO); Schulman 2020 (k3 KL
estimator); Chen et al. 2021 (unbiased pass@k); Yue et al. 2025 (does RL go beyond the base model? pass@k curves).
"""

from .losses import (LOSS_AGGREGATIONS, TRL_STD_EPS, clipped_surrogate, group_advantages, grpo_loss,  # noqa: F401
                     informative_groups, k3_kl, mask_truncated, overlong_penalty, token_gradient_weights)
from .rollout import Rollout, chat_prompt, completion_logprobs, concat_rollouts, sample_completions  # noqa: F401
from .evaluate import (coverage, evaluate_policy, lenient_correct, majority_answer, majority_at_k,  # noqa: F401
                       pass_at_k_curve, pass_at_k_per_problem, sample_correct_counts, strict_correct)
from .trl_compare import trl_logps_and_loss  # noqa: F401
from .training import GRPOConfig, GRPOResult, _check_config, config_dict, gpu_plan, train_grpo  # noqa: F401
