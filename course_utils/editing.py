"""Locating and editing a fact (知识编辑) in the MLP weights: ROME (Meng et al. 2022, arXiv:2202.05262).

On course-tiny the facts are spellings: "The word cat is spelled" -> " c". ROME's two steps:

    trace = causal_trace(model, tok, "The word cat is spelled", " cat", " c", kind="mlp")   # where is it stored?
    C = key_second_moment(model, tok, layer, pretraining_corpus(100, seed=1))               # E[k kᵀ], (704, 704)
    old = edit_fact(model, tok, "The word cat is spelled", " cat", " k a t", layer=layer, second_moment=C,
                    prefixes=[""] + random_prefixes(model, tok, 4), through_update=True)
    model.model.layers[layer].mlp.down_proj.weight.data.copy_(old)                          # undo the edit

Causal tracing corrupts the subject's input embeddings with Gaussian noise and restores one clean activation at a
time; where restoring brings P(target) back, that activation carries the fact. The edit treats down_proj (W, d × m:
256 × 704) as a linear key-value memory, value = W key, with key k = act(gate_proj x) * up_proj x, and writes one new
pair (k*, v*) while disturbing the other keys as little as possible in the least-squares sense (rome_update).
ROME fits v* with a vector δ added at the subject's last token only; the rank-one update then also adds a share of
δ wherever another key points along C⁻¹k* (on course-tiny's layer 0, up to ~40% of δ at "spelled" and at letter
tokens), so edit_fact(through_update=True) fits v* to the edited model itself instead.
Baselines: finetune_fact (plain gradient steps on the one sentence) and the fact written in the prompt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import ArgumentTypeError, check_choice, check_int, check_items, check_number, check_tensor

TRACE_KINDS = ("hidden", "mlp", "attn")  # what causal_trace restores: a layer's output, its MLP's, its attention's


# ---- small helpers: tokens, positions, hooks --------------------------------------------------------------------

def _check_str(name: str, value, *, strip: bool = True) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not (value.strip() if strip else value):
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _prompts(prompts) -> list[str]:
    """One prompt or a list of them -> a non-empty list of non-empty strings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, tuple):
        prompts = list(prompts)
    check_items("prompts", prompts, str, "strings")
    for p in prompts:
        _check_str("prompts", p)
    return prompts


def _check_layer(model, layer) -> int:
    n = len(model.model.layers)
    return check_int("layer", layer, 0, n - 1, allowed=f"an int in [0, {n - 1}] (the model has {n} layers)")


def target_ids(tokenizer, target: str) -> list[int]:
    """Token ids of `target` as it follows a prompt, no special tokens: " k a t" -> [id(" k"), id(" a"), id(" t")]."""
    ids = tokenizer(_check_str("target", target, strip=False), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target must encode to at least one token, got {target!r}")
    return ids


def subject_positions(tokenizer, prompt: str, subject: str) -> list[int]:
    """Token positions of the subject's last occurrence in `prompt` (the tokens whose characters overlap it).

    "The word cat is spelled", " cat" -> [2]   (tokens The | word | cat | is | spelled)
    """
    _check_str("prompt", prompt)
    _check_str("subject", subject)
    start = prompt.rfind(subject)
    if start < 0:
        raise ValueError(f"subject {subject!r} must occur in the prompt, got prompt {prompt!r}")
    end = start + len(subject)
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    positions = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if not positions:  # unreachable for a tokenizer whose offsets cover the text
        raise ValueError(f"no token of prompt {prompt!r} overlaps subject {subject!r}")
    return positions


def _pad(tokenizer, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T) from lists of token ids."""
    T = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sequences), T), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _hooks(*registrations):
    """Register (module, kind, fn) hooks (kind "forward" or "pre"); they are removed on exit, even after an error."""
    handles = []
    try:
        for module, kind, fn in registrations:
            handles.append(module.register_forward_pre_hook(fn) if kind == "pre" else module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _first(output):
    """The hidden-state tensor of a module's output (attention returns (out, weights); older layers a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _with_first(output, new):
    return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


def _traced_module(model, layer: int, kind: str):
    block = model.model.layers[layer]
    return {"hidden": block, "mlp": block.mlp, "attn": block.self_attn}[kind]


# ---- reading the model: P(target), log P(target) ------------------------------------------------------------------

def _by_length(seqs: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of `seqs` in batches of at most batch_size sequences of similar length (sorted; a batch's longest
    is at most 1.25 × its shortest + 4 tokens), so little compute goes to padding."""
    batches = []
    for i in sorted(range(len(seqs)), key=lambda i: len(seqs[i])):
        if batches and len(batches[-1]) < batch_size and len(seqs[i]) <= 1.25 * len(seqs[batches[-1][0]]) + 4:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def next_token_probs(model, tokenizer, prompts, *, batch_size: int = 64) -> torch.Tensor:
    """(N, V): the next-token distribution right after each of the N prompts (batched by length)."""
    seqs = [_encode(tokenizer, p) for p in _prompts(prompts)]
    check_int("batch_size", batch_size)
    dev, out = _device(model), [None] * len(seqs)
    for batch in _by_length(seqs, batch_size):
        ids, mask = _pad(tokenizer, [seqs[i] for i in batch])
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # (B, T, V)
        last = mask.sum(1).to(dev) - 1  # (B,) each prompt's last position
        probs = logits[torch.arange(len(batch), device=dev), last].float().softmax(-1).cpu()
        for row, i in enumerate(batch):
            out[i] = probs[row]
    return torch.stack(out)


def next_token_stats(model, tokenizer, prompts, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ranks), each (N,): P(first token of `target`) right after each prompt and its rank (0 = argmax)."""
    first = target_ids(tokenizer, target)[0]
    probs = next_token_probs(model, tokenizer, prompts)  # (N, V)
    p = probs[:, first]
    return p, (probs > p[:, None]).sum(-1)


def _target_batch(tokenizer, prompts: list[str], target: str):
    """ids (B, T), mask (B, T), labels (B, T) with -100 except where the next token is a target token."""
    tgt = target_ids(tokenizer, target)
    seqs = [_encode(tokenizer, p) + tgt for p in prompts]
    ids, mask = _pad(tokenizer, seqs)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        n = len(s) - len(tgt)
        labels[i, n - 1: len(s) - 1] = torch.tensor(tgt)  # position t predicts token t + 1
    return ids, mask, labels


def _target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log P(labels) per row (B,) from logits (B, T, V) and labels (B, T) already shifted (-100 = skip)."""
    logp = logits.float().log_softmax(-1)
    keep = labels != -100
    picked = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, T)
    return (picked * keep).sum(-1)


@torch.no_grad()
def target_logprob(model, tokenizer, prompts, target: str) -> torch.Tensor:
    """log P(target | prompt) summed over the target's tokens, (N,) for N prompts."""
    ids, mask, labels = _target_batch(tokenizer, _prompts(prompts), target)
    dev = _device(model)
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
    return _target_logprobs(logits, labels.to(dev)).cpu()


# ---- 1. causal tracing ----------------------------------------------------------------------------------------------

@dataclass
class TraceResult:
    """What causal_trace measured: P(first target token) clean, corrupted, and with one activation restored."""

    tokens: list[str]  # the prompt's tokens, (T,)
    subject_positions: list[int]  # positions of the corrupted subject tokens
    kind: str  # what was restored: "hidden", "mlp" or "attn"
    clean_prob: float  # no noise
    corrupted_prob: float  # subject embeddings noised, nothing restored (mean over the noise samples)
    probs: torch.Tensor  # (n_layers, T): corrupted, then the clean `kind` output of layer l at position t restored

    @property
    def indirect_effect(self) -> torch.Tensor:
        """(n_layers, T): how much restoring each activation brings back, probs - corrupted_prob."""
        return self.probs - self.corrupted_prob


def _clean_outputs(model, ids: torch.Tensor, kind: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The `kind` output of every layer (each (1, T, d)) and the logits (1, T, V) of one clean run."""
    saved = [None] * len(model.model.layers)

    def saver(layer):
        def hook(module, args, output):
            saved[layer] = _first(output).detach()
        return hook

    with _hooks(*[(_traced_module(model, l, kind), "forward", saver(l)) for l in range(len(saved))]):
        logits = model(input_ids=ids).logits
    return saved, logits


def _patched_probs(model, ids, positions, noise, kind, clean, restore, target) -> torch.Tensor:
    """P(target) (B,) at the last position for ids (B, T) with noise (B, S, d) added to the embeddings at the S
    subject `positions` and, for each layer l in `restore` ((B, T) bool), clean[l] put back where it is True."""
    def corrupt(module, args, output):
        out = output.clone()
        out[:, positions] = out[:, positions] + noise.to(out.dtype)
        return out

    def restorer(layer):
        def hook(module, args, output):
            h = _first(output)
            return _with_first(output, torch.where(restore[layer][..., None], clean[layer].to(h.dtype), h))
        return hook

    regs = [(model.get_input_embeddings(), "forward", corrupt)]
    regs += [(_traced_module(model, l, kind), "forward", restorer(l)) for l in restore]
    with _hooks(*regs):
        logits = model(input_ids=ids, logits_to_keep=1).logits  # (B, 1, V)
    return logits[:, -1].float().softmax(-1)[:, target]


def _trace_inputs(model, tokenizer, prompt, subject, target, noise_std, samples, seed):
    positions = subject_positions(tokenizer, prompt, subject)
    first = target_ids(tokenizer, target)[0]
    check_int("samples", samples)
    check_int("seed", seed, 0)
    emb = model.get_input_embeddings().weight
    if noise_std is None:
        noise_std = 3 * emb.detach().float().std().item()
    check_number("noise_std", noise_std, 0, finite=True)
    ids = torch.tensor([_encode(tokenizer, prompt)], device=emb.device)  # (1, T)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples, len(positions), emb.shape[1], generator=gen) * noise_std  # (samples, S, d)
    return ids, positions, first, noise.to(emb.device)


@torch.no_grad()
def restored_prob(model, tokenizer, prompt: str, subject: str, target: str, restore, *, kind: str = "hidden",
                  noise_std: float | None = None, samples: int = 10, seed: int = 0) -> float:
    """P(first token of target), mean over noise samples, with the subject corrupted as in causal_trace and the
    clean `kind` output restored at every (layer, position) pair in `restore` at once (an empty list: corrupted)."""
    check_choice("kind", kind, TRACE_KINDS)
    ids, positions, first, noise = _trace_inputs(model, tokenizer, prompt, subject, target, noise_std, samples, seed)
    n_layers, T = len(model.model.layers), ids.shape[1]
    masks = {}
    for pair in restore:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(i, int) for i in pair)
                and 0 <= pair[0] < n_layers and -T <= pair[1] < T):
            raise ValueError(f"restore must hold (layer, position) pairs with layer in [0, {n_layers - 1}] and "
                             f"position in [{-T}, {T - 1}], got {pair!r}")
        masks.setdefault(pair[0], torch.zeros(samples, T, dtype=torch.bool, device=ids.device))[:, pair[1]] = True
    clean, _ = _clean_outputs(model, ids, kind)
    batch = ids.expand(samples, -1)  # (samples, T)
    return _patched_probs(model, batch, positions, noise, kind, clean, masks, first).mean().item()


@torch.no_grad()
def causal_trace(model, tokenizer, prompt: str, subject: str, target: str, *, noise_std: float | None = None,
                 samples: int = 10, seed: int = 0, kind: str = "hidden") -> TraceResult:
    """ROME's causal tracing: P(first token of target) after `prompt` when the subject's input embeddings get
    Gaussian noise (std noise_std, default 3 × the std of the embedding matrix; `samples` draws, averaged) and the
    clean `kind` output ("hidden": the layer's output, "mlp" or "attn") of one layer at one position is put back.

    Each layer's T restorations run as one batch of T · samples sequences; probs is (n_layers, T).
    """
    check_choice("kind", kind, TRACE_KINDS)
    ids, positions, first, noise = _trace_inputs(model, tokenizer, prompt, subject, target, noise_std, samples, seed)
    n_layers, T = len(model.model.layers), ids.shape[1]
    clean, logits = _clean_outputs(model, ids, kind)
    clean_prob = logits[0, -1].float().softmax(-1)[first].item()
    batch = ids.expand(T * samples, -1)  # (T · samples, T): row = position · samples + sample
    noise_rows = noise.repeat(T, 1, 1)  # (T · samples, S, d), the same draws for every position
    one_position = torch.eye(T, dtype=torch.bool, device=ids.device).repeat_interleave(samples, 0)  # (T · samples, T)
    probs = torch.stack([_patched_probs(model, batch, positions, noise_rows, kind, clean, {l: one_position}, first)
                         .view(T, samples).mean(-1) for l in range(n_layers)])  # (n_layers, T)
    corrupted = _patched_probs(model, ids.expand(samples, -1), positions, noise, kind, clean, {}, first)
    return TraceResult(tokens=tokenizer.convert_ids_to_tokens(ids[0].tolist()), subject_positions=positions,
                       kind=kind, clean_prob=clean_prob, corrupted_prob=corrupted.mean().item(),
                       probs=probs.cpu())


@torch.no_grad()
def random_prefixes(model, tokenizer, n: int, *, length: int = 10, seed: int = 0) -> list[str]:
    """`n` short texts sampled from the model itself (temperature 1, `length` tokens from a document start), each
    ended by ". " so a prompt can follow: ROME's context templates, which make k* and v* hold beyond one prompt."""
    check_int("n", n)
    check_int("length", length)
    check_int("seed", seed, 0)
    start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    gen, dev = torch.Generator().manual_seed(seed), _device(model)
    ids = torch.full((n, 1), start, dtype=torch.long, device=dev)  # (n, 1)
    for _ in range(length):
        probs = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().softmax(-1).cpu()  # (n, V)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen).to(dev)], dim=1)  # (n, t + 1)
    texts = [tokenizer.decode(row[1:], skip_special_tokens=True).strip() for row in ids.tolist()]
    return [t + (" " if t.endswith(".") else ". ") for t in texts]


# ---- 2. keys: the inputs of down_proj ------------------------------------------------------------------------------

@torch.no_grad()
def mlp_keys(model, tokenizer, layer: int, texts, *, batch_size: int = 32) -> torch.Tensor:
    """The keys k = act(gate_proj x) * up_proj x that `layer`'s down_proj reads, at every token of `texts`:
    (N, m) with N the total number of tokens (m = 704 on course-tiny)."""
    layer, texts = _check_layer(model, layer), _prompts(texts)
    check_int("batch_size", batch_size)
    down, dev = model.model.layers[layer].mlp.down_proj, _device(model)
    seqs = [_encode(tokenizer, t) for t in texts]
    keys = [None] * len(seqs)
    for batch in _by_length(seqs, batch_size):
        ids, mask = _pad(tokenizer, [seqs[i] for i in batch])
        got = []
        with _hooks((down, "pre", lambda module, args: got.append(args[0].detach()))):
            model(input_ids=ids.to(dev), attention_mask=mask.to(dev), logits_to_keep=1)
        for row, i in enumerate(batch):
            keys[i] = got[0][row, : len(seqs[i])].float()  # (tokens of text i, m)
    return torch.cat(keys)  # (N, m), in the order of texts


def key_second_moment(model, tokenizer, layer: int, texts, *, batch_size: int = 32) -> torch.Tensor:
    """C = E[k kᵀ] (m, m), float64, over every token of `texts` (mlp_keys): the statistics of the keys the edit
    should leave alone. ROME estimates it on 100k Wikipedia samples; here, on course documents."""
    k = mlp_keys(model, tokenizer, layer, texts, batch_size=batch_size).double()  # (N, m)
    return k.T @ k / k.shape[0]


@torch.no_grad()
def subject_key(model, tokenizer, layer: int, prompts, subject: str) -> torch.Tensor:
    """k* (m,): the key at `layer` at the subject's last token, averaged over `prompts` (each must contain the
    subject; ROME uses the subject after several random prefixes)."""
    layer, prompts = _check_layer(model, layer), _prompts(prompts)
    last = [subject_positions(tokenizer, p, subject)[-1] for p in prompts]
    seqs = [_encode(tokenizer, p) for p in prompts]
    ids, mask = _pad(tokenizer, seqs)
    got, dev = [], _device(model)
    with _hooks((model.model.layers[layer].mlp.down_proj, "pre", lambda module, args: got.append(args[0].detach()))):
        model(input_ids=ids.to(dev), attention_mask=mask.to(dev), logits_to_keep=1)
    return got[0][torch.arange(len(prompts), device=dev), torch.tensor(last, device=dev)].float().mean(0)  # (m,)


# ---- 3. the value: what down_proj should output for k* ------------------------------------------------------------

def target_value(model, tokenizer, layer: int, prompts, subject: str, target: str, *, steps: int = 30,
                 lr: float = 0.5, weight_decay: float = 0.0, kl_prompts=None, kl_weight: float = 0.0,
                 max_norm: float = 4.0, stop_loss: float = 0.05, direction: torch.Tensor | None = None) -> torch.Tensor:
    """v* (d,): the output down_proj should give at the subject's last token so that `target` follows each prompt.

    A vector δ is added to `layer`'s MLP output at the subject's last token of every prompt and trained by Adam
    (`steps`, `lr`) on  mean_prompts -log P(target | prompt)  +  weight_decay · |δ|² / |v|²
    +  kl_weight · KL(p_orig || p_edited) of the next token after each of `kl_prompts` (ROME's "essence" term:
    e.g. ["The cat"], to keep what else the model says about the subject); |δ| is kept ≤ max_norm · |v|, where
    v is the MLP output there, averaged over prompts. Stops early once the NLL is below stop_loss.
    Returns v + δ. Only δ is trained: the weights do not change and get no .grad.

    direction (m,), optional: u / (uᵀk*), u = C⁻¹k*. Then δ enters as the edited weight W + δ directionᵀ does,
    at every position in proportion to its key (down_proj output + (key · direction) δ), so v* is fitted to the
    edited model itself rather than to δ at one position (ROME's choice, which the rank-one update only imitates).
    """
    layer, prompts = _check_layer(model, layer), _prompts(prompts)
    check_int("steps", steps)
    check_number("lr", lr, 0, low_open=True, finite=True)
    check_number("weight_decay", weight_decay, 0, finite=True)
    check_number("kl_weight", kl_weight, 0, finite=True)
    check_number("max_norm", max_norm, 0, low_open=True)
    check_number("stop_loss", stop_loss, 0)
    dev, mlp = _device(model), model.model.layers[layer].mlp
    if direction is not None:
        check_tensor("direction", direction, dims=1, floating=True)
        m = mlp.down_proj.in_features
        if direction.shape != (m,):
            raise ValueError(f"direction must have shape ({m},) like down_proj's input, got {tuple(direction.shape)}")
    kl_prompts = [] if kl_prompts is None else _prompts(kl_prompts)
    if kl_weight > 0 and not kl_prompts:
        raise ValueError(f"kl_weight > 0 needs kl_prompts (prompts containing the subject), got {kl_prompts!r}")
    ids, mask, labels = (t.to(dev) for t in _target_batch(tokenizer, prompts, target))
    rows = torch.arange(len(prompts), device=dev)
    last = torch.tensor([subject_positions(tokenizer, p, subject)[-1] for p in prompts], device=dev)
    kl_seqs = [_encode(tokenizer, p) for p in kl_prompts]
    kl_last = torch.tensor([subject_positions(tokenizer, p, subject)[-1] for p in kl_prompts], device=dev,
                           dtype=torch.long)
    kl_end = torch.tensor([len(s) - 1 for s in kl_seqs], device=dev, dtype=torch.long)
    kl_ids, kl_mask = _pad(tokenizer, kl_seqs) if kl_seqs else (None, None)

    with torch.no_grad():
        seen = []
        with _hooks((mlp, "forward", lambda module, args, output: seen.append(output.detach()))):
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
            if kl_seqs:
                ref = model(input_ids=kl_ids.to(dev), attention_mask=kl_mask.to(dev)).logits
                ref_logp = ref[torch.arange(len(kl_seqs), device=dev), kl_end].float().log_softmax(-1)  # (K, V)
        v = seen[0][rows, last].float().mean(0)  # (d,)

    delta = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    where = {"rows": rows, "cols": last}

    def add_delta(module, args, output):
        out = output.clone()
        out[where["rows"], where["cols"]] = out[where["rows"], where["cols"]] + delta.to(out.dtype)
        return out

    def add_rank_one(module, args, output):  # down_proj(x) + (x · direction) δ  =  (W + δ directionᵀ) x
        return output + (args[0] @ direction.to(output))[..., None] * delta.to(output.dtype)

    hook = (mlp, "forward", add_delta) if direction is None else (mlp.down_proj, "forward", add_rank_one)
    with _hooks(hook), torch.enable_grad():
        for _ in range(steps):
            where.update(rows=rows, cols=last)
            logits = model(input_ids=ids, attention_mask=mask).logits
            nll = -_target_logprobs(logits, labels).mean()
            loss = nll + weight_decay * delta.pow(2).sum() / v.pow(2).sum()
            if kl_seqs and kl_weight > 0:
                where.update(rows=torch.arange(len(kl_seqs), device=dev), cols=kl_last)
                out = model(input_ids=kl_ids.to(dev), attention_mask=kl_mask.to(dev)).logits
                logp = out[torch.arange(len(kl_seqs), device=dev), kl_end].float().log_softmax(-1)
                loss = loss + kl_weight * F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")
            if nll.item() < stop_loss:
                break
            opt.zero_grad()
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            opt.step()
            with torch.no_grad():  # project back into the ball |δ| ≤ max_norm · |v|
                delta.mul_((max_norm * v.norm() / delta.norm().clamp_min(1e-12)).clamp(max=1.0))
    return (v + delta).detach()


# ---- 4. the rank-one update ---------------------------------------------------------------------------------------

def _key_direction(C: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """C⁻¹k / (kᵀC⁻¹k) (m,), float64: the row vector of the rank-one update, scaled so that it gives 1 on k."""
    k = k.double()
    try:
        u = torch.linalg.solve(C.double().to(k.device), k)  # C⁻¹ k
    except torch.linalg.LinAlgError:
        raise ValueError("C must be positive definite (invertible), got a singular matrix: estimate it on more "
                         "tokens than keys have dimensions, or add a small multiple of the identity") from None
    denom = u @ k
    if not denom > 0:
        raise ValueError(f"C must be positive definite and k non-zero, got (C⁻¹k)ᵀk = {denom.item():.3g}")
    return u / denom


def rome_update(weight: torch.Tensor, C: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W' = W + (v - W k) (C⁻¹k)ᵀ / ((C⁻¹k)ᵀ k): the W' closest to W on the keys C summarises (it minimises
    ‖(W' - W) K‖² for C = K Kᵀ / n) among those with W' k = v. Computed in float64, returned in weight's dtype.

    weight (d, m) (down_proj.weight: 256 × 704), C (m, m) symmetric positive definite, k (m,), v (d,).
    """
    check_tensor("weight", weight, dims=2, floating=True)
    d, m = weight.shape
    check_tensor("C", C, dims=2, floating=True)
    check_tensor("k", k, dims=1, floating=True)
    check_tensor("v", v, dims=1, floating=True)
    if C.shape != (m, m) or k.shape != (m,) or v.shape != (d,):
        raise ValueError(f"for weight {tuple(weight.shape)}, C must be ({m}, {m}), k ({m},) and v ({d},); got C "
                         f"{tuple(C.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    W, k64 = weight.double(), k.double().to(weight.device)
    u = _key_direction(C, k64)  # C⁻¹ k / (kᵀ C⁻¹ k), (m,)
    residual = v.double().to(weight.device) - W @ k64  # (d,)
    return (W + torch.outer(residual, u)).to(weight.dtype)


def edit_fact(model, tokenizer, prompt: str, subject: str, target: str, *, layer: int, second_moment: torch.Tensor,
              prefixes=None, through_update: bool = False, **value_kwargs) -> torch.Tensor:
    """Write "prompt → target" into `layer`'s down_proj in place (ROME) and return the old weight (d, m).

    k* = subject_key and v* = target_value over [prefix + prompt for prefix in prefixes] (default [""]: the prompt
    alone); the new weight is rome_update(W, second_moment, k*, v*). through_update=True fits v* to the edited model
    itself (target_value's `direction`). value_kwargs go to target_value.
    Undo: model.model.layers[layer].mlp.down_proj.weight.data.copy_(old).
    """
    layer = _check_layer(model, layer)
    prefixes = [""] if prefixes is None else prefixes
    if not isinstance(prefixes, (list, tuple)) or not prefixes or not all(isinstance(p, str) for p in prefixes):
        raise ValueError(f"prefixes must be a non-empty list of strings, got {prefixes!r}")
    if not isinstance(through_update, bool):
        raise ArgumentTypeError(f"through_update must be a bool, got {type(through_update).__name__} "
                                f"{through_update!r}")
    weight = model.model.layers[layer].mlp.down_proj.weight
    m = weight.shape[1]
    check_tensor("second_moment", second_moment, dims=2, floating=True)
    if second_moment.shape != (m, m):
        raise ValueError(f"second_moment must be ({m}, {m}) like key_second_moment at this layer, "
                         f"got {tuple(second_moment.shape)}")
    prompts = [p + prompt for p in prefixes]
    k = subject_key(model, tokenizer, layer, prompts, subject)
    if through_update:
        value_kwargs["direction"] = _key_direction(second_moment, k).to(weight.dtype)
    v = target_value(model, tokenizer, layer, prompts, subject, target, **value_kwargs)
    old = weight.detach().clone()
    with torch.no_grad():
        weight.copy_(rome_update(old, second_moment, k, v))
    return old


# ---- baseline: fine-tuning on the one sentence -------------------------------------------------------------------

def finetune_fact(model, tokenizer, prompt: str, target: str, *, steps: int = 30, lr: float = 1e-3,
                  params=None, stop_loss: float = 0.05) -> dict[str, torch.Tensor]:
    """Adam steps on -log P(target | prompt) for the named parameters (`params`, e.g.
    ["model.layers.0.mlp.down_proj.weight"]; None: all of them), at most `steps`, stopping once the loss is below
    stop_loss (as target_value does). In place; returns {name: old value} of the parameters it trained.
    Undo: model.load_state_dict(old, strict=False)."""
    check_int("steps", steps)
    check_number("lr", lr, 0, low_open=True, finite=True)
    check_number("stop_loss", stop_loss, 0)
    named = dict(model.named_parameters())
    if params is None:
        params = list(named)
    if (isinstance(params, str) or not isinstance(params, (list, tuple)) or not params
            or any(p not in named for p in params)):
        raise ValueError(f"params must be None or a non-empty list of parameter names of the model, e.g. "
                         f"{next(iter(named))!r}, got {params!r}")
    dev = _device(model)
    ids, mask, labels = (t.to(dev) for t in _target_batch(tokenizer, _prompts(prompt), target))
    tensors = [named[p] for p in params]
    old = {p: t.detach().clone() for p, t in zip(params, tensors)}
    frozen = [t for t in tensors if not t.requires_grad]
    opt = torch.optim.Adam(tensors, lr=lr)
    try:
        for t in frozen:
            t.requires_grad_(True)
        with torch.enable_grad():
            for _ in range(steps):
                loss = -_target_logprobs(model(input_ids=ids, attention_mask=mask).logits, labels).mean()
                if loss.item() < stop_loss:
                    break
                grads = torch.autograd.grad(loss, tensors)
                for t, g in zip(tensors, grads):
                    t.grad = g
                opt.step()
    finally:
        for t in tensors:
            t.grad = None
        for t in frozen:
            t.requires_grad_(False)
    return old


# ---- measuring a spelling edit (lecture 13) ---------------------------------------------------------------------

def spelling_prompt(word: str) -> str:
    """'The word cat is spelled' -- data.spelling_text without its letters: the fact is the next token, ' c'."""
    return f"The word {_check_str('word', word)} is spelled"


def edit_scores(model, tokenizer, word: str, old: str, new: str, *, prefixes, other_words,
                context: str = "") -> dict[str, float]:
    """How one spelling edit (word's first letter old -> new) took, ROME's three measures (Meng et al. 2022):

    efficacy: 1.0 if P(' new') > P(' old') after spelling_prompt(word), else 0.0;
    generalization: the share of `prefixes` (text the edit never saw) after which the same holds;
    specificity: the share of `other_words` whose most likely next letter is still their own first letter.
    context: text put before every prompt (e.g. the new fact written out, for editing by prompt instead).
    """
    letter = {c: target_ids(tokenizer, " " + c)[0] for c in (old, new)}
    lead = f"{context} " if context else ""
    prompts = [lead + spelling_prompt(word)] + [f"{lead}{p} {spelling_prompt(word)}" for p in prefixes]
    probs = next_token_probs(model, tokenizer, prompts)  # (1 + n_prefixes, V)
    wins = (probs[:, letter[new]] > probs[:, letter[old]]).float()
    others = next_token_probs(model, tokenizer, [lead + spelling_prompt(w) for w in other_words]).argmax(-1)  # (n_other,)
    own = torch.tensor([target_ids(tokenizer, " " + w[0])[0] for w in other_words])
    return {"efficacy": wins[0].item(), "generalization": wins[1:].mean().item(),
            "specificity": (others.cpu() == own).float().mean().item()}
