"""GRPO (group relative policy optimization, 组相对策略优化) from scratch: each piece its own function, then a loop.

Shapes: N = prompts x group_size completions, C = completion length (padded), G = group_size.

    adv = group_advantages(rewards, group_size=8)                        # (N,)
    loss = grpo_loss(logps, old_logps, ref_logps, adv, completion_mask)  # scalar, same value as trl's GRPOTrainer

- losses: group advantages, clipped surrogate, k3 KL, the loss and its aggregations (pure functions);
- rollout: sampling completions from the policy and their log-probs;
- evaluate: held-out accuracy, greedy or with N samples (test-time compute);
- training: the loop (train_grpo), its config and result, the GPU plan of a round.

References: Shao et al. 2024 (DeepSeekMath, GRPO); DeepSeek-AI 2025 (DeepSeek-R1, R1-Zero);
Liu et al. 2025 (Understanding R1-Zero-Like Training: Dr. GRPO); Schulman 2020 (k3 KL estimator).
"""

from .losses import (LOSS_AGGREGATIONS, TRL_STD_EPS, clipped_surrogate, group_advantages, grpo_loss,  # noqa: F401
                     k3_kl, token_gradient_weights)
from .rollout import Rollout, chat_prompt, completion_logprobs, sample_completions  # noqa: F401
from .evaluate import evaluate_policy, majority_answer  # noqa: F401
from .training import GRPOConfig, GRPOResult, _check_config, config_dict, gpu_plan, train_grpo  # noqa: F401
