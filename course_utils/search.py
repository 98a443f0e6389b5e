"""Search beyond beam search, from scratch: diverse (group) beam search and contrastive search.

transformers 5 moved both out of the library to Hub repositories (transformers-community/group-beam-search,
.../contrastive-search), which need trust_remote_code and a network, so here they are checked against our beam search
and greedy decoding in the limits where they reduce to them, and against hand-worked steps (tests/test_search.py).

- Diverse beam search (Vijayakumar et al. 2018, arXiv:1610.02424): the beams are split into groups; at each step the
  groups extend in turn, and a group's log-probabilities are lowered by diversity_penalty times the number of earlier
  groups that picked the same token at this step (Hamming diversity), so the groups spread out.
- Contrastive search (Su et al. 2022, arXiv:2202.06417): among the top_k next tokens, pick
  argmax (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j), where h_v is the candidate's last hidden state and h_j
  those of the text so far (the "degeneration penalty"): likely tokens whose representation does not repeat context.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .checks import check_int, check_number
from .decoding import NEG_INF, _check_generate_args


@torch.no_grad()
def diverse_beam_search(model, input_ids: torch.Tensor, num_beams: int, num_groups: int, max_new_tokens: int, *,
                        diversity_penalty: float = 1.0, suppress_tokens: Sequence[int] = ()) -> torch.Tensor:
    """All num_beams final hypotheses of one prompt (1, T) -> (num_beams, T + max_new_tokens), group by group, each
    group's beams best first.

    No early finishing: every beam runs max_new_tokens (use it with EOS in suppress_tokens, as lecture 05 does), so a
    hypothesis' score is its summed log-probability. num_groups = 1 is plain beam search.
    """
    _check_generate_args(model, input_ids, max_new_tokens, None)
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must hold one prompt (1, T), got {input_ids.shape[0]} rows")
    check_int("num_beams", num_beams)
    check_int("num_groups", num_groups, 1, num_beams, allowed=f"an int in [1, num_beams = {num_beams}]")
    if num_beams % num_groups:
        raise ValueError(f"num_beams ({num_beams}) must be divisible by num_groups, got {num_groups}")
    check_number("diversity_penalty", diversity_penalty, 0.0)
    per_group = num_beams // num_groups
    beams = [input_ids.repeat(per_group, 1) for _ in range(num_groups)]  # each (per_group, L)
    scores = [torch.cat([torch.zeros(1), torch.full((per_group - 1,), -1e9)]) for _ in range(num_groups)]
    for _ in range(max_new_tokens):
        picked_this_step = None  # (V,) how many beams of earlier groups chose each token at this step
        for g in range(num_groups):
            logprobs = model(input_ids=beams[g]).logits[:, -1].float().log_softmax(-1)  # (per_group, V)
            if suppress_tokens:
                logprobs[:, list(suppress_tokens)] = NEG_INF
            penalized = logprobs if picked_this_step is None else logprobs - diversity_penalty * picked_this_step
            total = (penalized + scores[g][:, None]).view(-1)  # (per_group * V,)
            _, flat = torch.topk(total, per_group)
            src, token = flat // logprobs.shape[-1], flat % logprobs.shape[-1]
            scores[g] = scores[g][src] + logprobs[src, token]  # the true log-probability, without the penalty
            beams[g] = torch.cat([beams[g][src], token[:, None]], dim=1)
            counts = torch.bincount(token, minlength=logprobs.shape[-1]).float()
            picked_this_step = counts if picked_this_step is None else picked_this_step + counts
    ordered = [b[s.argsort(descending=True)] for b, s in zip(beams, scores)]
    return torch.cat(ordered, dim=0)


@torch.no_grad()
def contrastive_search(model, input_ids: torch.Tensor, max_new_tokens: int, *, top_k: int = 4, alpha: float = 0.6,
                       suppress_tokens: Sequence[int] = ()) -> torch.Tensor:
    """Contrastive search for prompts of equal length (B, T) -> (B, T + max_new_tokens); alpha = 0 is greedy.

    Runs without a KV cache (each step scores the top_k candidates by a forward pass on prefix + candidate), so it
    costs about top_k times greedy decoding without a cache.
    """
    _check_generate_args(model, input_ids, max_new_tokens, None)
    check_int("top_k", top_k)
    check_number("alpha", alpha, 0.0, 1.0)
    ids = input_ids
    B = ids.shape[0]
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, output_hidden_states=True)
        logits = out.logits[:, -1].float()  # (B, V)
        if suppress_tokens:
            logits[:, list(suppress_tokens)] = NEG_INF
        probs, cand = logits.softmax(-1).topk(top_k, dim=-1)  # (B, k)
        context = out.hidden_states[-1]  # (B, L, d) last-layer states of the text so far
        extended = torch.cat([ids.repeat_interleave(top_k, 0), cand.reshape(-1, 1)], dim=1)  # (B * k, L + 1)
        h_new = model(input_ids=extended, output_hidden_states=True).hidden_states[-1][:, -1]  # (B * k, d)
        cos = F.cosine_similarity(h_new[:, None, :], context.repeat_interleave(top_k, 0), dim=-1)  # (B * k, L)
        penalty = cos.max(dim=-1).values.view(B, top_k)  # (B, k) degeneration penalty
        choice = ((1 - alpha) * probs - alpha * penalty).argmax(dim=-1)  # (B,)
        ids = torch.cat([ids, cand.gather(1, choice[:, None])], dim=1)
    return ids
