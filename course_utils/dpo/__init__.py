"""Preference alignment: DPO (with a frozen reference model) and SimPO (without one), from scratch.

    pairs = make_preference_pairs(256, "train", seed=0)          # (prompt, chosen, rejected), checkable preference
    batch = collate_pairs(tokenize_pairs(tokenizer, pairs[:8]), tokenizer.pad_token_id)
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])  # (2B,)
    losses, r_c, r_r = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=0.1)

- losses: completion log-probs and the DPO / SimPO losses (pure functions);
- pairs: where pairs come from (rules, the model's mistakes, online sampling), tokenization and batches;
- training: the loss function for train.train, the frozen reference model;
- evaluate: held-out pair metrics, greedy replies, the per-family accuracy table;
- trl_trainer: the same with trl's DPOTrainer.

DPO: Rafailov et al. 2023, "Direct Preference Optimization" (arXiv:2305.18290).
Online DPO (fresh pairs sampled from the policy being trained): Guo et al. 2024, "Direct Language Model Alignment
from Online AI Feedback" (arXiv:2402.04792).
SimPO: Meng, Xia and Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward" (arXiv:2405.14734).
Batches hold the chosen completions first, then the rejected ones (as in trl), so `x.chunk(2)` splits them.
"""

from .losses import dpo_loss, sequence_logprobs, simpo_loss, token_kl, token_logprobs  # noqa: F401
from .pairs import (ANSWER_TEMPLATE, CORRUPTIONS, PreferencePair, collate_pairs, make_online_pair_batch_fn,  # noqa: F401
                    make_pair_batch_fn, make_preference_pairs, model_mistake_pairs, parse_reply, sampled_pairs,
                    tokenize_pair, tokenize_pairs)
from .training import PREFERENCE_METHODS, PreferenceConfig, frozen_copy, make_loss_fn, model_bytes  # noqa: F401
from .evaluate import accuracy_table, evaluate_pairs, evaluate_replies  # noqa: F401
from .trl_trainer import to_trl_dataset, trl_dpo_train, trl_history  # noqa: F401
