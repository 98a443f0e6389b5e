"""Sampling from the policy: `group_size` completions per prompt with a KV cache, and their log-probs (N, C)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..checks import check_int, check_items, check_number, check_tensor


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int, *,
                        temperature: float = 1.0, with_entropy: bool = False):
    """Log-prob of each of the last `n_completion` tokens under `model`: (N, C) [and entropy (N, C), nats].

    input_ids, attention_mask (N, P + C), prompts left-padded. Naive equivalent:
    log_softmax(model(input_ids).logits[:, -C-1:-1] / T).gather(-1, input_ids[:, -C:, None]).
    """
    check_tensor("input_ids", input_ids, dims=2)
    check_int("n_completion", n_completion, 1, input_ids.shape[1] - 1)
    check_number("temperature", temperature, 0, low_open=True)
    # logits_to_keep=C+1 computes the LM head only where it is needed; the last position predicts nothing we score.
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n_completion + 1).logits
    logits = logits[:, :-1].float() / temperature  # (N, C, V): position t predicts token t+1
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, C, V)
    logps = logp_all.gather(-1, input_ids[:, -n_completion:].unsqueeze(-1)).squeeze(-1)  # (N, C)
    if not with_entropy:
        return logps
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N, C)
    return logps, entropy


@dataclass
class Rollout:
    """Sampled completions: prompt ids (left-padded) + completion ids (right-padded), their masks and texts."""

    prompt_ids: torch.Tensor  # (N, P)
    prompt_mask: torch.Tensor  # (N, P) 1 = real token
    completion_ids: torch.Tensor  # (N, C) pad after the stop token
    completion_mask: torch.Tensor  # (N, C) 1 up to and including the stop token (as trl)
    texts: list[str]  # decoded completions, special tokens skipped
    stopped: torch.Tensor  # (N,) bool, ended with a stop token within max_new_tokens

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, P + C)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # (N, P + C)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)  # (N,)

    def select(self, rows) -> "Rollout":
        """The rollout restricted to `rows` (a bool mask (N,), an index tensor or a slice)."""
        idx = torch.arange(len(self.texts))[rows]
        dev = self.prompt_ids.device
        return Rollout(self.prompt_ids[idx.to(dev)], self.prompt_mask[idx.to(dev)], self.completion_ids[idx.to(dev)],
                       self.completion_mask[idx.to(dev)], [self.texts[i] for i in idx.tolist()], self.stopped[idx])


def concat_rollouts(rollouts: Sequence[Rollout], pad_id: int) -> Rollout:
    """Rollouts stacked row-wise: prompts left-padded and completions right-padded to the longest."""
    if not rollouts:
        raise ValueError("rollouts must be a non-empty list of Rollout")
    P = max(r.prompt_ids.shape[1] for r in rollouts)
    C = max(r.completion_ids.shape[1] for r in rollouts)

    def pad(t, width, value, left):
        n = width - t.shape[1]
        return torch.nn.functional.pad(t, (n, 0) if left else (0, n), value=value)

    return Rollout(torch.cat([pad(r.prompt_ids, P, pad_id, True) for r in rollouts]),
                   torch.cat([pad(r.prompt_mask, P, 0, True) for r in rollouts]),
                   torch.cat([pad(r.completion_ids, C, pad_id, False) for r in rollouts]),
                   torch.cat([pad(r.completion_mask, C, 0, False) for r in rollouts]),
                   [t for r in rollouts for t in r.texts], torch.cat([r.stopped for r in rollouts]))


def chat_prompt(tokenizer, prompt: str) -> str:
    """The user turn rendered with the chat template, ending where the assistant's reply starts."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def _stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], group_size: int = 1, max_new_tokens: int = 40, *,
                       temperature: float = 1.0, generator: torch.Generator | None = None) -> Rollout:
    """`group_size` completions per prompt (consecutive rows), sampled with a KV cache; temperature 0 = greedy.

    Stops a row at <|im_end|> / EOS; randomness only from `generator`.
    """
    check_items("prompts", prompts, str, "strings")
    check_int("group_size", group_size)
    check_int("max_new_tokens", max_new_tokens)
    check_number("temperature", temperature, 0, allowed=">= 0 (0 = greedy)")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([chat_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    finally:
        tokenizer.padding_side = old_side
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, 0).to(dev)  # (N, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, 0).to(dev)  # (N, P)
    N = prompt_ids.shape[0]
    stop = torch.tensor(_stop_ids(tokenizer), device=dev)
    pad = tokenizer.pad_token_id
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1)
    cache, mask = out.past_key_values, prompt_mask
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    new_ids, new_mask = [], []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()  # (N, V)
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(dev)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        new_mask.append((~done).long())
        new_ids.append(tok)
        done = done | torch.isin(tok, stop)
        if done.all():
            break
        mask = torch.cat([mask, torch.ones(N, 1, dtype=mask.dtype, device=dev)], dim=1)  # (N, P + t + 1)
        out = model(input_ids=tok[:, None], attention_mask=mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    model.train(was_training)
    completion_ids = torch.stack(new_ids, 1)  # (N, C)
    completion_mask = torch.stack(new_mask, 1)  # (N, C)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, done.cpu())
