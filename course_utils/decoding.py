"""Decoding strategies: logits filters, sampling, greedy / sampled generation, beam search, repetition metrics.

Every filter returns logits with removed entries set to -inf, exactly like transformers' logits processors
(TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
NoRepeatNGramLogitsProcessor); tests/test_decoding.py checks each against the library.
References: Holtzman et al. 2020 (top-p), Fan et al. 2018 (top-k), Nguyen et al. 2024 (min-p),
Keskar et al. 2019 (CTRL repetition penalty), Welleck et al. 2020 (seq-rep-n, unlikelihood),
Li et al. 2016 (distinct-n), Wang et al. 2023 (self-consistency).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

import torch

from .checks import check_choice, check_int, check_number

NEG_INF = -float("inf")


# ---- filters (logits (B, V) -> logits (B, V)) ----------------------------------------------------

def apply_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """logits / t: t < 1 sharpens the distribution, t > 1 flattens it. logits (B, V) -> (B, V)."""
    _check_logits(logits)
    t = check_number("temperature", t, 0.0, math.inf, low_open=True, high_open=True)
    return logits / t


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept); k=0 or k >= V keeps all. (B, V) -> (B, V)."""
    _check_logits(logits)
    k = check_int("top_k", k, 0, allowed="an int >= 0")
    if k == 0:
        return logits.clone()
    k = min(max(k, min_tokens_to_keep), logits.shape[-1])
    kth_value = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_value, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability adds up to >= p. (B, V) -> (B, V).

    Naive equivalent: sort descending, keep tokens while the mass *before* them is < p.
    """
    _check_logits(logits)
    p = check_number("top_p", p, 0.0, 1.0, low_open=True)
    ascending, order = torch.sort(logits, descending=False)  # (B, V) least likely first
    mass_up_to = ascending.softmax(dim=-1).cumsum(dim=-1)  # mass of this token and all less likely ones
    remove_sorted = mass_up_to <= 1 - p  # the tail that together holds at most 1 - p
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, NEG_INF)


def min_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep tokens with probability >= p * (probability of the most likely token). (B, V) -> (B, V)."""
    _check_logits(logits)
    p = check_number("min_p", p, 0.0, 1.0)
    probs = logits.softmax(dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    remove = remove.scatter(1, keep, False)
    return logits.masked_fill(remove, NEG_INF)


def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL rule for every token already in input_ids: positive logits / penalty, negative logits * penalty.

    logits (B, V), input_ids (B, L) -> (B, V). Applied once per token however often it occurred.
    """
    _check_logits(logits)
    _check_ids(input_ids, logits)
    penalty = check_number("penalty", penalty, 0.0, math.inf, low_open=True, high_open=True)
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids.long(), True)  # (B, V)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def divide_probability_penalty(probs: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """The course notes' rule: P(w) / penalty for seen tokens, then renormalise. probs (B, V) -> probs (B, V)."""
    _check_logits(probs)
    _check_ids(input_ids, probs)
    penalty = check_number("penalty", penalty, 0.0, math.inf, low_open=True, high_open=True)
    seen = torch.zeros_like(probs, dtype=torch.bool).scatter(1, input_ids.long(), True)
    out = torch.where(seen, probs / penalty, probs)
    return out / out.sum(dim=-1, keepdim=True)


def ban_repeated_ngrams(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Set to -inf every token that would complete an n-gram already present in input_ids. (B, V) -> (B, V)."""
    _check_logits(logits)
    _check_ids(input_ids, logits)
    n = check_int("no_repeat_ngram_size", n, allowed="an int >= 1")
    length = input_ids.shape[1]
    if length < n:
        return logits.clone()
    windows = input_ids.unfold(1, n, 1)  # (B, L - n + 1, n): every n-gram so far
    prefix = input_ids[:, length - n + 1:]  # (B, n - 1): the n-1 tokens the next token would follow
    matches = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, L - n + 1)
    banned = torch.zeros((logits.shape[0], logits.shape[1] + 1), dtype=torch.bool, device=logits.device)
    spare = logits.shape[1]  # non-matching windows write into a spare column
    banned.scatter_(1, torch.where(matches, windows[..., -1].long(), spare), True)
    return logits.masked_fill(banned[:, :-1], NEG_INF)


# Warpers share one signature (logits, value); transformers applies them in this order.
WARPERS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "temperature": apply_temperature,
    "top_k": top_k_filter,
    "top_p": top_p_filter,
    "min_p": min_p_filter,
}
TRANSFORMERS_ORDER = ("temperature", "top_k", "top_p", "min_p")
NOTES_ORDER = ("top_k", "top_p", "min_p", "temperature")  # the order the course notes describe


def warp_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                min_p: float | None = None, order: Sequence[str] = TRANSFORMERS_ORDER) -> torch.Tensor:
    """Apply the sampling warpers that are switched on, in `order`. (B, V) -> (B, V)."""
    _check_logits(logits)
    unknown = [name for name in order if name not in WARPERS]
    if unknown or len(set(order)) != len(order):
        raise ValueError(f"order must list distinct names from {list(WARPERS)}, got {list(order)}")
    values = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}
    active = {"temperature": temperature != 1.0, "top_k": top_k != 0, "top_p": top_p != 1.0, "min_p": min_p is not None}
    for name in order:
        if active[name]:
            logits = WARPERS[name](logits, values[name])
    if not active["temperature"]:
        check_number("temperature", temperature, 0.0, math.inf, low_open=True, high_open=True)
    return logits


def sample_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                      min_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Warp (temperature, top-k, top-p, min-p, in transformers' order) and draw one token per row. (B, V) -> (B,)."""
    warped = warp_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    probs = warped.float().softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def distribution_stats(logits: torch.Tensor, filtered: torch.Tensor) -> dict:
    """For one row each: tokens kept, probability mass kept (under the unfiltered softmax), entropy after (nats)."""
    _check_logits(logits)
    probs = logits.softmax(dim=-1)
    kept = torch.isfinite(filtered)
    after = filtered.softmax(dim=-1)
    entropy = -(after * torch.where(after > 0, after.log(), torch.zeros_like(after))).sum(-1)
    return {"n_kept": kept.sum(-1), "mass_kept": (probs * kept).sum(-1), "entropy": entropy}


# ---- the generation loop ------------------------------------------------------------------------

def _eos_ids(model, eos_token_id) -> list[int]:
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    if eos_token_id is None:
        return []
    return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)


def _pad_id(model, pad_token_id, eos: list[int]) -> int:
    if pad_token_id is None:
        pad_token_id = model.generation_config.pad_token_id
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    return int(pad_token_id)


def process_logits(logits: torch.Tensor, input_ids: torch.Tensor, prompt_len: int, *, repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, min_new_tokens: int = 0, eos_ids: Sequence[int] = (),
                   suppress_tokens: Sequence[int] = ()) -> torch.Tensor:
    """The non-sampling processors, in transformers' order: penalty, n-gram ban, min new tokens, suppress."""
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, input_ids, repetition_penalty)
    if no_repeat_ngram_size:
        logits = ban_repeated_ngrams(logits, input_ids, no_repeat_ngram_size)
    if min_new_tokens and input_ids.shape[1] - prompt_len < min_new_tokens and eos_ids:
        logits = logits.clone()
        logits[:, list(eos_ids)] = NEG_INF
    if suppress_tokens:
        logits = logits.clone()
        logits[:, list(suppress_tokens)] = NEG_INF
    return logits


class _Stepper:
    """Runs the model one step at a time, with or without the KV cache; handles left padding."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, use_cache: bool):
        self.model, self.use_cache, self.cache = model, use_cache, None
        self.mask = attention_mask if attention_mask is not None and not bool(attention_mask.all()) else None
        if attention_mask is not None:
            self.positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, T)
        else:
            self.positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, V) for the sequences ids (B, L) = everything so far."""
        new = ids if (self.cache is None or not self.use_cache) else ids[:, -1:]
        positions = self.positions[:, -new.shape[1]:]
        out = self.model(input_ids=new, attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=self.use_cache)
        if self.use_cache:
            self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def advance(self, reorder: torch.Tensor | None = None) -> None:
        """Extend masks/positions by one token; reorder the cache (beam search) by row indices."""
        if reorder is not None:
            if self.cache is not None:
                self.cache.reorder_cache(reorder)
            self.positions = self.positions[reorder] if self.positions.shape[0] > 1 else self.positions
            self.mask = self.mask[reorder] if self.mask is not None else None
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=1)
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)


def _check_generate_args(model, input_ids, max_new_tokens, attention_mask):
    if not hasattr(model, "forward") or not hasattr(model, "generation_config"):
        raise TypeError(f"model must be a transformers causal LM, got {type(model).__name__}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise TypeError("input_ids must be a LongTensor of shape (B, T), e.g. tokenizer(text, return_tensors='pt').input_ids")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids must hold at least one token per row")
    check_int("max_new_tokens", max_new_tokens, allowed="an int >= 1")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")


STRATEGIES = ("greedy", "sample", "beam")


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, *, strategy: str = "greedy", use_cache: bool = True,
             attention_mask: torch.Tensor | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             min_p: float | None = None, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             min_new_tokens: int = 0, suppress_tokens: Sequence[int] = (), eos_token_id=None, pad_token_id=None,
             generator: torch.Generator | None = None, num_beams: int = 4, length_penalty: float = 1.0,
             early_stopping: bool | str = False) -> torch.Tensor:
    """Prompt + new tokens (B, T + n), like model.generate: finished rows are padded, stops when all hit EOS.

    input_ids (B, T), left-padded with attention_mask (B, T) when prompts differ in length.
    strategy "greedy" (argmax), "sample" (temperature/top-k/top-p/min-p) or "beam" (calls beam_search).
    """
    check_choice("strategy", strategy, STRATEGIES)
    _check_generate_args(model, input_ids, max_new_tokens, attention_mask)
    check_number("repetition_penalty", repetition_penalty, 0.0, math.inf, low_open=True, high_open=True)
    check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    check_int("min_new_tokens", min_new_tokens, 0)
    if strategy == "beam":
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("strategy='beam' needs prompts of equal length (no padding)")
        return beam_search(model, input_ids, num_beams, max_new_tokens, length_penalty, early_stopping=early_stopping,
                           use_cache=use_cache, repetition_penalty=repetition_penalty,
                           no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                           suppress_tokens=suppress_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if strategy == "sample":  # validate once, before any forward pass
        warp_logits(torch.zeros(1, 2), temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    eos = _eos_ids(model, eos_token_id)
    pad = _pad_id(model, pad_token_id, eos)
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
    stepper = _Stepper(model, input_ids, attention_mask, use_cache)
    prompt_len, ids = input_ids.shape[1], input_ids
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        logits = stepper.logits(ids)  # (B, V)
        logits = process_logits(logits, ids, prompt_len, repetition_penalty=repetition_penalty,
                                no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                                eos_ids=eos, suppress_tokens=suppress_tokens)
        if strategy == "greedy":
            next_ids = logits.argmax(dim=-1)
        else:
            next_ids = sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                         generator=generator)
        next_ids = torch.where(unfinished, next_ids, pad)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)  # (B, L + 1)
        unfinished &= ~torch.isin(next_ids, eos_tensor)
        if not unfinished.any():
            break
        stepper.advance()
    return ids


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, num_beams: int, max_new_tokens: int, length_penalty: float = 1.0, *,
                early_stopping: bool | str = False, num_return_sequences: int = 1, use_cache: bool = True,
                repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, min_new_tokens: int = 0,
                suppress_tokens: Sequence[int] = (), eos_token_id=None, pad_token_id=None,
                return_scores: bool = False):
    """Beam search as in model.generate(num_beams=...): (B * num_return_sequences, T + n) best first.

    Finished hypotheses are scored sum(log p) / n_new_tokens ** length_penalty. early_stopping: True stops once
    num_beams hypotheses are done; False stops when no running beam can still beat them (transformers' heuristic);
    "never" runs the exact test. return_scores=True also returns the scores (B * num_return_sequences,).
    """
    _check_generate_args(model, input_ids, max_new_tokens, None)
    num_beams = check_int("num_beams", num_beams, allowed="an int >= 1")
    check_number("length_penalty", length_penalty, -math.inf, math.inf, low_open=True, high_open=True)
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    check_int("num_return_sequences", num_return_sequences, 1, num_beams, allowed=f"in [1, num_beams={num_beams}]")
    eos = _eos_ids(model, eos_token_id)
    pad = _pad_id(model, pad_token_id, eos)
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
    B, T = input_ids.shape
    K = max(2, 1 + len(eos)) * num_beams  # candidates per step: enough that num_beams stay unfinished
    max_len = T + max_new_tokens
    running = input_ids.repeat_interleave(num_beams, dim=0)  # (B * beams, T)
    run_scores = torch.zeros(B, num_beams, device=input_ids.device)
    run_scores[:, 1:] = -1e9  # all beams start identical: only beam 0 may expand at step one
    done_seqs = torch.full((B, num_beams, max_len), pad, dtype=torch.long, device=input_ids.device)
    done_scores = torch.full((B, num_beams), -1e9, device=input_ids.device)
    done_lens = torch.zeros(B, num_beams, dtype=torch.long, device=input_ids.device)
    done_flag = torch.zeros(B, num_beams, dtype=torch.bool, device=input_ids.device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=input_ids.device)
    is_top = torch.arange(K, device=input_ids.device) < num_beams  # only the best num_beams may finish
    stepper = _Stepper(model, running, None, use_cache)
    for step in range(max_new_tokens):
        cur = T + step
        logprobs = stepper.logits(running).log_softmax(dim=-1)  # (B * beams, V)
        logprobs = process_logits(logprobs, running, T, repetition_penalty=repetition_penalty,
                                  no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
                                  eos_ids=eos, suppress_tokens=suppress_tokens)
        V = logprobs.shape[-1]
        total = (logprobs.view(B, num_beams, V) + run_scores[:, :, None]).view(B, num_beams * V)
        cand_scores, flat = torch.topk(total, K, dim=-1)  # (B, K) best first
        src_beam, token = flat // V, flat % V  # (B, K)
        src_rows = (src_beam + torch.arange(B, device=flat.device)[:, None] * num_beams)  # (B, K) rows of running
        cand_seqs = torch.cat([running[src_rows.view(-1)], token.view(-1, 1)], dim=1).view(B, K, cur + 1)
        ends = torch.isin(token, eos_tensor) | (cur + 1 >= max_len)  # (B, K)
        # running beams for the next step: the best num_beams candidates that did not end
        keep_scores = cand_scores + ends.float() * -1e9
        next_idx = torch.topk(keep_scores, num_beams, dim=-1).indices  # (B, beams)
        run_scores = keep_scores.gather(1, next_idx)
        # finished hypotheses: merge the new ones (top num_beams ranks only) into the pool of the best num_beams
        new_scores = cand_scores / ((cur + 1 - T) ** length_penalty)
        pool_full = done_flag.all(dim=1, keepdim=True) & (early_stopping is True)
        allowed = ends & is_top[None, :] & ~pool_full & can_improve
        new_scores = new_scores + (~allowed).float() * -1e9
        padded = torch.full((B, K, max_len), pad, dtype=torch.long, device=flat.device)
        padded[:, :, :cur + 1] = cand_seqs
        merged_scores = torch.cat([done_scores, new_scores], dim=1)  # (B, beams + K)
        best = torch.topk(merged_scores, num_beams, dim=-1).indices  # (B, beams)
        done_scores = merged_scores.gather(1, best)
        done_seqs = torch.cat([done_seqs, padded], dim=1)[torch.arange(B)[:, None], best]
        new_lens = torch.full((B, K), cur + 1 - T, dtype=torch.long, device=flat.device)
        done_lens = torch.cat([done_lens, new_lens], dim=1).gather(1, best)
        done_flag = torch.cat([done_flag, allowed], dim=1).gather(1, best)
        rows = src_rows.gather(1, next_idx).view(-1)  # (B * beams,) which old row each new beam extends
        running = cand_seqs[torch.arange(B)[:, None], next_idx].view(B * num_beams, cur + 1)
        # stop when no running beam can beat the worst finished one (heuristic as in transformers)
        gen_len = (max_len - T) if (early_stopping == "never" and length_penalty > 0) else (cur + 1 - T)
        best_running = run_scores[:, :1] / (gen_len ** length_penalty)
        worst_done = torch.where(done_flag, done_scores.min(dim=1, keepdim=True).values, torch.full_like(done_scores, -1e9))
        can_improve = can_improve & (best_running > worst_done).any(dim=-1, keepdim=True)
        if (not can_improve.any()) or (bool(done_flag.all()) and early_stopping is True) or bool(ends.all()):
            break
        stepper.advance(reorder=rows)
    out_len = T + int(done_lens[:, :num_return_sequences].max())
    seqs = done_seqs[:, :num_return_sequences, :out_len].reshape(B * num_return_sequences, out_len)
    if return_scores:
        return seqs, done_scores[:, :num_return_sequences].reshape(-1)
    return seqs


# ---- sequence scoring, repetition metrics, choosing among samples --------------------------------

@torch.no_grad()
def sequence_logprob(model, sequences: torch.Tensor, prompt_len: int, pad_token_id: int | None = None,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of log p(token | prefix) over columns >= prompt_len of each row, pads ignored. (B, L) -> (B,).

    attention_mask (B, L): 0 on left padding (positions are counted from the first real token, as in generate).
    """
    positions = None
    if attention_mask is not None:
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, L)
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=positions).logits[:, :-1].float()
    lp = logits.log_softmax(-1).gather(-1, sequences[:, 1:, None]).squeeze(-1)  # (B, L - 1)
    mask = torch.zeros_like(lp, dtype=torch.bool)
    mask[:, prompt_len - 1:] = True
    if pad_token_id is not None:
        mask &= sequences[:, 1:] != pad_token_id
    return (lp * mask).sum(-1)


def _ngrams(tokens: Sequence[int], n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(tokens: Sequence[int], n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2020): fraction of the n-grams of one sequence that repeat an earlier one."""
    check_int("n", n, allowed="an int >= 1")
    grams = _ngrams(list(tokens), n)
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over the sequences."""
    check_int("n", n)
    grams = [g for seq in sequences for g in _ngrams(list(seq), n)]
    return 0.0 if not grams else len(set(grams)) / len(grams)


def ends_in_loop(tokens: Sequence[int], tail: int = 24, n: int = 4, min_repeated: float = 0.8) -> bool:
    """True when the last `tail` tokens mostly copy earlier text: at least `min_repeated` of the n-grams that start
    in them already occurred earlier in the sequence (a 'repeater' loop, whatever its period; near-exact repeats such
    as '... 95. Answer: 43 53 ... 95.. Answer: 43' count too).

    Example: [5, 6, 7] * 10 -> True; list(range(40)) -> False. Sequences shorter than tail + n - 1 -> False.
    """
    check_int("tail", tail)
    check_int("n", n)
    check_number("min_repeated", min_repeated, 0.0, 1.0, low_open=True)
    tokens = list(tokens)
    if len(tokens) < tail + n - 1:
        return False
    seen, repeated, total = set(), 0, 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        if i >= len(tokens) - tail:
            total += 1
            repeated += gram in seen
        seen.add(gram)
    return repeated >= min_repeated * total


def repetition_report(sequences: Sequence[Sequence[int]]) -> dict:
    """Mean seq-rep-2/4, distinct-1/2 and the fraction of sequences ending in a loop, for generated tokens."""
    if not sequences:
        raise ValueError("sequences must be a non-empty list of token lists")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"rep-2": mean([repetition_rate(s, 2) for s in sequences]),
            "rep-4": mean([repetition_rate(s, 4) for s in sequences]),
            "distinct-1": distinct_n(sequences, 1), "distinct-2": distinct_n(sequences, 2),
            "loops": mean([float(ends_in_loop(s)) for s in sequences])}


def majority_vote(answers: Sequence) -> object:
    """The most common answer (None entries ignored); ties go to the answer seen first. None if nothing valid."""
    valid = [a for a in answers if a is not None]
    if not valid:
        return None
    counts = Counter(valid)
    top = max(counts.values())
    return next(a for a in valid if counts[a] == top)


def best_of_n(candidates: Sequence, scores: Sequence[float]) -> object:
    """The candidate with the highest score (first one on ties)."""
    if len(candidates) != len(scores) or not candidates:
        raise ValueError(f"candidates and scores must be non-empty and of equal length, got {len(candidates)} and {len(scores)}")
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return candidates[best]


def extract_answer(text: str) -> str | None:
    """The answer after the prompt: text up to the first '.' or newline, stripped ('' -> None)."""
    answer = text.split("\n")[0].split(". ")[0].strip().rstrip(".").strip()
    return answer or None


def filter_view(logits: torch.Tensor, input_ids: torch.Tensor | None = None, *, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0) -> dict:
    """What the widget shows for one next-token distribution: probabilities before/after every filter and stats.

    logits (V,) or (1, V); input_ids (L,) or (1, L) for the repetition penalty. Returns probs_before (V,)
    (softmax of the raw logits), probs_after (V,), n_kept, mass_kept, entropy_before, entropy_after (nats).
    """
    logits = logits.reshape(1, -1).float() if isinstance(logits, torch.Tensor) else logits
    _check_logits(logits)
    processed = logits
    if repetition_penalty != 1.0:
        if input_ids is None:
            raise ValueError("input_ids are needed when repetition_penalty != 1.0")
        processed = apply_repetition_penalty(processed, input_ids.reshape(1, -1).long(), repetition_penalty)
    filtered = warp_logits(processed, temperature=temperature, top_k=top_k, top_p=top_p,
                           min_p=min_p if min_p > 0 else None)
    before, after = distribution_stats(logits, logits), distribution_stats(logits, filtered)
    return {"probs_before": logits.softmax(-1)[0], "probs_after": filtered.softmax(-1)[0],
            "n_kept": int(after["n_kept"][0]), "mass_kept": float(after["mass_kept"][0]),
            "entropy_before": float(before["entropy"][0]), "entropy_after": float(after["entropy"][0])}


def order_comparison(logits: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0,
                     min_p: float | None = None) -> dict:
    """Tokens kept and total-variation distance between the sampling distributions of the two warper orders.

    logits (B, V) -> {"kept_transformers", "kept_notes": (B,) counts, "tv": (B,) in [0, 1]}.
    """
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    a = warp_logits(logits, order=TRANSFORMERS_ORDER, **kw)
    b = warp_logits(logits, order=NOTES_ORDER, **kw)
    tv = 0.5 * (a.softmax(-1) - b.softmax(-1)).abs().sum(-1)
    return {"kept_transformers": torch.isfinite(a).sum(-1), "kept_notes": torch.isfinite(b).sum(-1), "tv": tv}


# ---- argument checks ----------------------------------------------------------------------------

def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        raise TypeError(f"logits must be a float tensor of shape (B, V), got "
                        f"{type(logits).__name__}{tuple(logits.shape) if isinstance(logits, torch.Tensor) else ''}")
    if logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty vocabulary dim, got shape {tuple(logits.shape)}")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN: the model's forward pass diverged (check the learning rate / dtype)")


def _check_ids(input_ids, logits) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32) or input_ids.dim() != 2:
        raise TypeError("input_ids must be an integer tensor of shape (B, L)")
    if input_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"input_ids batch {input_ids.shape[0]} != logits batch {logits.shape[0]}")
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= logits.shape[-1]):
        raise ValueError(f"input_ids must lie in [0, {logits.shape[-1]}), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
