"""Classic RLHF's policy optimization against a learned reward: PPO (critic, GAE, clipped policy and value losses, KL
folded into the reward) and RLOO (a leave-one-out baseline instead of a critic), each piece its own function.

    rewards = kl_penalized_rewards(scores, logps, ref_logps, mask, kl_coef)  # (N, C)
    adv, returns = gae(rewards, values, gamma=1.0, lam=0.95)                   # (N, C)
    adv = rloo_advantages(seq_rewards, group_size)                             # (N,)

- losses: the pure functions;
- training: the loop (train_rlhf) with the reward model as the proxy and the verifier logged as the true reward;
- trl_compare: trl's RLOOTrainer advantage and loss on our batch.

References: Schulman et al. 2017 (PPO), 2016 (GAE); Ouyang et al. 2022 (InstructGPT: KL in the reward, critic from the
reward model); Ziegler et al. 2019; Huang et al. 2024 (the N+ implementation details of RLHF with PPO); Ahmadian et al.
2024 (RLOO, back to basics); Gao et al. 2022 (reward model over-optimization).
"""

from .losses import (explained_variance, gae, kl_penalized_rewards, masked_mean, policy_loss,  # noqa: F401
                     rloo_advantages, rloo_loss, value_loss, whiten)
from .trl_compare import trl_rloo_batch  # noqa: F401
from .training import (ALGORITHMS, PPOConfig, RLHFResult, check_config, config_dict, memory_plan,  # noqa: F401
                       token_values, train_rlhf)
