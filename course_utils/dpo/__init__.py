"""Preference alignment from scratch: DPO and its family (with a frozen reference model), SimPO and ORPO (without).

    pairs = make_preference_pairs(256, "train", seed=0)          # (prompt, chosen, rejected), checkable preference
    batch = collate_pairs(tokenize_pairs(tokenizer, pairs[:8]), tokenizer.pad_token_id)
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])  # (2B,)
    losses, r_c, r_r = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=0.1)

- losses: completion log-probs and the preference losses (pure functions, each checked against trl);
- pairs: where pairs come from (rules, the model's mistakes, sampled once or online), tokenization and batches;
- training: PREFERENCE_METHODS (the loss function for train.train per method), NEEDS_REFERENCE, the frozen reference;
- evaluate: held-out pair metrics, greedy replies, accuracy during training, KL on samples, per-token changes;
- trl_trainer: the same with trl's DPOTrainer.

Methods (PREFERENCE_METHODS keys; the loss function in brackets):
- dpo [dpo_loss]: Rafailov et al. 2023, "Direct Preference Optimization" (arXiv:2305.18290); label_smoothing gives
  conservative DPO (cDPO), Mitchell 2023, "A note on DPO with noisy preferences".
- robust [robust_dpo_loss]: rDPO, Chowdhury et al. 2024, "Provably Robust DPO" (arXiv:2403.00409).
- ipo [ipo_loss]: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences"
  (arXiv:2310.12036).
- hinge [hinge_loss]: SLiC-HF, Zhao et al. 2023 (arXiv:2305.10425).
- kto [kto_loss]: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization" (arXiv:2402.01306).
- simpo [simpo_loss]: Meng, Xia and Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"
  (arXiv:2405.14734); no reference model.
- orpo [orpo_loss]: Hong, Lee and Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
  (arXiv:2403.07691); no reference model.
Online DPO (fresh pairs sampled from the policy being trained): Guo et al. 2024, "Direct Language Model Alignment
from Online AI Feedback" (arXiv:2402.04792).
Batches hold the chosen completions first, then the rejected ones (as in trl), so `x.chunk(2)` splits them.
"""

from .losses import (dpo_loss, hinge_loss, ipo_loss, kto_loss, orpo_loss, robust_dpo_loss,  # noqa: F401
                     sequence_logprobs, simpo_loss, token_kl, token_logprobs)
from .pairs import (ANSWER_TEMPLATE, CORRUPTIONS, PreferencePair, collate_pairs, make_online_pair_batch_fn,  # noqa: F401
                    make_pair_batch_fn, make_preference_pairs, model_mistake_pairs, parse_reply, sampled_pairs,
                    tokenize_pair, tokenize_pairs)
from .training import (NEEDS_REFERENCE, PREFERENCE_METHODS, PreferenceConfig, frozen_copy,  # noqa: F401
                       make_loss_fn, model_bytes, needs_reference)
from .evaluate import (accuracy_table, displacement_summary, evaluate_pairs, evaluate_replies, sampled_kl,  # noqa: F401
                       token_logp_changes, train_and_track)
from .trl_trainer import to_trl_dataset, trl_dpo_train, trl_history  # noqa: F401
