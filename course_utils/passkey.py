"""Passkey retrieval: a task that needs a token far back, and small models that learn it at one length.

Each sequence is random filler with a passkey hidden in it — `<key> d1 d2 d3` — and ends with `<ask> d1 d2 d3`:
the model must copy the digits it saw, however far back. Trained at length L, it is then asked at 2L, 4L, 8L with
the passkey anywhere, so the distance to the key reaches far beyond what training showed (Mohtashami & Jaggi 2023,
arXiv:2305.16300, introduced this test; Chen et al. 2023 use it for position interpolation).

`RetrievalLM` is a small pre-norm decoder whose attention takes its positions one of three ways: RoPE (with any
`positional.rope_inv_freq` scaling, switched after training by `set_rope_scaling`), ALiBi (Press et al. 2022) or
none at all (NoPE: only the causal mask orders the tokens; Kazemnejad et al. 2023, arXiv:2305.19466).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .checks import check_choice, check_int, check_number
from .env import REPO_ROOT
from .norms import RMSNorm, SwiGLUMLP
from .positional import alibi_slopes, apply_rope, rope_inv_freq

# vocabulary: 10 digits, filler words, and three markers
N_DIGITS, N_FILLER = 10, 32
BOS, KEY, ASK = N_DIGITS + N_FILLER, N_DIGITS + N_FILLER + 1, N_DIGITS + N_FILLER + 2
VOCAB_SIZE = N_DIGITS + N_FILLER + 3
TOKEN_NAMES = [str(d) for d in range(N_DIGITS)] + [f"w{i}" for i in range(N_FILLER)] + ["<bos>", "<key>", "<ask>"]
POSITION_TYPES = ("rope", "alibi", "nope")


def passkey_batch(n: int, length: int, *, n_digits: int = 3, generator: torch.Generator | None = None,
                  key_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of `length` tokens: <bos>, filler with `<key> d1..dk` at key_start, then `<ask> d1..dk` at the end.

    key_start: (n,) positions of <key> (default: uniform over every position that fits). Returns
    (ids (n, length) int64, key_start (n,)). The answer digits are ids[:, -n_digits:].
    """
    check_int("n", n)
    check_int("n_digits", n_digits)
    check_int("length", length, 2 * n_digits + 3, allowed=f">= 2 * n_digits + 3 = {2 * n_digits + 3}")
    last_start = length - 2 * n_digits - 2  # <key> + digits must end before <ask> + digits
    ids = torch.randint(N_DIGITS, N_DIGITS + N_FILLER, (n, length), generator=generator)
    ids[:, 0] = BOS
    if key_start is None:
        key_start = torch.randint(1, last_start + 1, (n,), generator=generator)
    elif key_start.shape != (n,) or key_start.min() < 1 or key_start.max() > last_start:
        raise ValueError(f"key_start must be (n,) = ({n},) positions in [1, {last_start}], got {key_start.tolist()}")
    digits = torch.randint(0, N_DIGITS, (n, n_digits), generator=generator)
    rows = torch.arange(n)[:, None]
    ids[rows, key_start[:, None]] = KEY
    ids[rows, key_start[:, None] + 1 + torch.arange(n_digits)] = digits
    ids[:, -n_digits - 1] = ASK
    ids[:, -n_digits:] = digits
    return ids, key_start


@dataclass
class RetrievalConfig:
    """Size and positions of a RetrievalLM; train_length is L, the only length it is trained at."""

    position: str = "rope"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    rope_base: float = 10000.0
    train_length: int = 64
    n_digits: int = 3


class _Attention(nn.Module):
    """Causal attention with RoPE, ALiBi or no positions. x (B, T, d) -> (B, T, d); keeps the last scores."""

    def __init__(self, cfg: RetrievalConfig):
        super().__init__()
        self.cfg, self.n_heads, self.head_dim = cfg, cfg.n_heads, cfg.d_model // cfg.n_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(cfg.d_model, cfg.d_model, bias=False)
                                                              for _ in range(4))
        self.keep_scores = False
        self.scores = None  # (B, H, T, T) pre-softmax scores of the last forward, when keep_scores

    def forward(self, x, inv_freq, attention_factor):
        B, T, _ = x.shape
        q, k, v = (p(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        pos = torch.arange(T, device=x.device)
        if self.cfg.position == "rope":
            q, k = apply_rope(q, pos, inv_freq, attention_factor), apply_rope(k, pos, inv_freq, attention_factor)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, T, T)
        if self.cfg.position == "alibi":
            slopes = alibi_slopes(self.n_heads).to(x.device)  # (H,)
            scores = scores - slopes[:, None, None] * (pos[:, None] - pos[None, :]).clamp(min=0)
        scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
        if self.keep_scores:
            self.scores = scores.detach()
        out = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class _Block(nn.Module):
    def __init__(self, cfg: RetrievalConfig):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(cfg.d_model), RMSNorm(cfg.d_model)
        self.attn = _Attention(cfg)
        self.mlp = SwiGLUMLP(cfg.d_model, 2 * cfg.d_model)

    def forward(self, x, inv_freq, attention_factor):
        x = x + self.attn(self.norm1(x), inv_freq, attention_factor)
        return x + self.mlp(self.norm2(x))


class RetrievalLM(nn.Module):
    """Small pre-norm decoder for the passkey task. input_ids (B, T) -> logits (B, T, VOCAB_SIZE)."""

    def __init__(self, cfg: RetrievalConfig):
        super().__init__()
        check_choice("position", cfg.position, POSITION_TYPES)
        check_int("d_model", cfg.d_model)
        check_int("n_heads", cfg.n_heads)
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError(f"d_model / n_heads must be an even int, got d_model={cfg.d_model}, n_heads={cfg.n_heads}")
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, VOCAB_SIZE, bias=False)
        self.set_rope_scaling(None)

    def set_rope_scaling(self, scaling: dict | None, seq_len: int | None = None) -> "RetrievalLM":
        """Use `rope_inv_freq(head_dim, rope_base, scaling, seq_len)` from now on (None: plain RoPE); returns self.

        original_max_position_embeddings defaults to train_length. Only a RoPE model takes a scaling.
        """
        if scaling is not None and self.cfg.position != "rope":
            raise ValueError(f"a RoPE scaling needs position='rope', this model has position={self.cfg.position!r}")
        if scaling is not None and scaling.get("rope_type") in ("dynamic", "yarn", "llama3"):
            scaling = {"original_max_position_embeddings": self.cfg.train_length, **scaling}
        self.scaling = scaling
        inv_freq, self.attention_factor = rope_inv_freq(self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base,
                                                        scaling, seq_len)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        return self

    def forward(self, input_ids):
        x = self.embed(input_ids)  # (B, T, d)
        for block in self.blocks:
            x = block(x, self.inv_freq, self.attention_factor)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


def answer_nll(logits: torch.Tensor, ids: torch.Tensor, n_digits: int) -> torch.Tensor:
    """NLL (nats) of each answer digit given everything before it: logits (B, T, V), ids (B, T) -> (B, n_digits)."""
    pred = logits[:, -n_digits - 1: -1]  # (B, k, V): the positions that predict the k answer digits
    return F.cross_entropy(pred.transpose(1, 2), ids[:, -n_digits:], reduction="none")


def train_retrieval(cfg: RetrievalConfig, *, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                    log_every: int = 50) -> tuple[RetrievalLM, list[dict]]:
    """Train a fresh RetrievalLM on passkey sequences of length cfg.train_length; (model in eval mode, log)."""
    torch.manual_seed(seed)
    model = RetrievalLM(cfg)
    log = _train(model, cfg.train_length, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=log_every)
    return model, log


def finetune_with_scaling(model: RetrievalLM, scaling: dict, length: int, *, steps: int, batch_size: int = 16,
                          lr: float = 1e-3, seed: int = 1, log_every: int = 10) -> tuple[RetrievalLM, list[dict]]:
    """A copy of a RoPE model with `scaling` applied, trained briefly on passkey sequences of `length` (Chen et al.
    2023 fine-tune position interpolation at the target length). Returns (copy in eval mode, log)."""
    tuned = copy.deepcopy(model).set_rope_scaling(scaling, seq_len=length)
    log = _train(tuned, length, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=log_every)
    return tuned, log


def _train(model: RetrievalLM, length: int, *, steps: int, batch_size: int, lr: float, seed: int,
           log_every: int) -> list[dict]:
    """AdamW on fresh passkey sequences (loss on the answer digits only), linear warm-up over 10% of the steps, then
    cosine decay. Returns log rows {"step", "loss", "accuracy"} averaged over the last `log_every` steps."""
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_int("log_every", log_every)
    check_number("lr", lr, 0, low_open=True)
    gen = torch.Generator().manual_seed(seed)
    k = model.cfg.n_digits
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * max(0.0, s - warm) / max(1, steps - warm)))))
    model.train()
    log, losses, hits = [], [], []
    for step in range(1, steps + 1):
        ids, _ = passkey_batch(batch_size, length, n_digits=k, generator=gen)
        logits = model(ids)
        nll = answer_nll(logits, ids, k)  # (B, k)
        nll.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(nll.mean().item())
        hits.append(_all_digits_right(logits, ids, k).float().mean().item())
        if step % log_every == 0:
            log.append({"step": step, "loss": sum(losses) / len(losses), "accuracy": sum(hits) / len(hits)})
            losses, hits = [], []
    model.eval()
    return log


def _all_digits_right(logits, ids, n_digits) -> torch.Tensor:
    """(B,) bool: the argmax after <ask> and after each given digit is the right next digit (= greedy gets all)."""
    pred = logits[:, -n_digits - 1: -1].argmax(-1)  # (B, k)
    return (pred == ids[:, -n_digits:]).all(-1)


@torch.no_grad()
def passkey_eval(model: RetrievalLM, length: int, n: int, *, seed: int = 0, batch_size: int = 64) -> dict:
    """Ask `model` for n passkeys in sequences of `length` tokens (key placed uniformly at random).

    Returns {"correct": (n,) bool (every digit greedy-right), "nll": (n,) mean answer NLL per digit,
    "distance": (n,) tokens from <key> to <ask>}. The same seed gives the same sequences for every model.
    """
    check_int("length", length)
    check_int("n", n)
    gen = torch.Generator().manual_seed(seed)
    k = model.cfg.n_digits
    ids, key_start = passkey_batch(n, length, n_digits=k, generator=gen)
    correct, nll = [], []
    for i in range(0, n, batch_size):
        batch = ids[i: i + batch_size]
        logits = model(batch)
        correct.append(_all_digits_right(logits, batch, k))
        nll.append(answer_nll(logits, batch, k).mean(-1))
    return {"correct": torch.cat(correct), "nll": torch.cat(nll), "distance": (length - k - 1) - key_start}


def passkey_study(methods: dict, lengths, n: int, *, seed: int = 0) -> dict:
    """Evaluate each method at each length on the same sequences.

    methods: {name: (model, scaling)}; scaling is None, or a RoPE scaling dict applied with seq_len = the length
    being asked (so {"rope_type": "dynamic", "factor": 1.0} chooses its factor from the length).
    Returns {name: {length: passkey_eval result}}; every model's RoPE is restored to what it was trained with.
    """
    out = {}
    for name, (model, scaling) in methods.items():
        trained = model.scaling
        out[name] = {}
        for length in lengths:
            if scaling is not None:
                model.set_rope_scaling(scaling, seq_len=length)
            out[name][length] = passkey_eval(model, length, n, seed=seed)
            model.set_rope_scaling(trained)
    return out


@torch.no_grad()
def ask_attention_scores(model: RetrievalLM, ids: torch.Tensor) -> torch.Tensor:
    """Pre-softmax attention scores of the <ask> query (the one that must find the key) in every layer and head.

    ids (B, T) from passkey_batch -> (B, n_layers, H, T) float32, -inf for no key (none: <ask> sees every token).
    """
    attns = [block.attn for block in model.blocks]
    for a in attns:
        a.keep_scores = True
    try:
        model(ids)
        ask = ids.shape[1] - model.cfg.n_digits - 1
        return torch.stack([a.scores[:, :, ask] for a in attns], dim=1)
    finally:
        for a in attns:
            a.keep_scores, a.scores = False, None


@torch.no_grad()
def ask_score_profile(model: RetrievalLM, length: int, n: int, *, layer: int = -1, seed: int = 0,
                      bin_size: int | None = None) -> dict:
    """What the <ask> query's scores in `layer` look like by distance, averaged over heads and n sequences.

    Returns {"distance": bin centres (K,), "filler_mean", "filler_p99": score of filler keys at that distance
    (K,), "key_score": (K,) score of the passkey's first digit when it sits at that distance (nan if never),
    "entropy": (n,) attention entropy of the <ask> row in nats, "key_weight": (n,) its attention weight on the
    passkey's first digit, both means over heads}. bin_size defaults to L / 2.
    """
    bin_size = bin_size or model.cfg.train_length // 2
    gen = torch.Generator().manual_seed(seed)
    ids, key_start = passkey_batch(n, length, n_digits=model.cfg.n_digits, generator=gen)
    scores = ask_attention_scores(model, ids)[:, layer]  # (n, H, T)
    ask = length - model.cfg.n_digits - 1
    distance = ask - torch.arange(length)  # (T,) distance of each key from <ask>
    is_filler = (ids >= N_DIGITS) & (ids < N_DIGITS + N_FILLER)  # (n, T)
    key_distance = ask - (key_start + 1)  # (n,)
    key_score = scores[torch.arange(n), :, key_start + 1].mean(-1)  # (n,)
    edges = torch.arange(0, ask + bin_size, bin_size)
    out = {"distance": [], "filler_mean": [], "filler_p99": [], "key_score": []}
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        in_bin = (distance >= lo) & (distance < hi) & (distance > 0)  # (T,)
        filler = scores.transpose(1, 2)[is_filler & in_bin[None]]  # (k, H) the scores of those keys
        if filler.numel() == 0:
            continue
        keys = (key_distance >= lo) & (key_distance < hi)
        out["distance"].append((lo + hi) / 2)
        out["filler_mean"].append(filler.mean().item())
        out["filler_p99"].append(filler.flatten().quantile(0.99).item())
        out["key_score"].append(key_score[keys].mean().item() if keys.any() else float("nan"))
    out = {k: torch.tensor(v) for k, v in out.items()}
    weights = torch.softmax(scores, dim=-1)  # (n, H, T)
    out["entropy"] = torch.special.entr(weights).sum(-1).mean(-1)  # (n,)
    out["key_weight"] = weights[torch.arange(n), :, key_start + 1].mean(-1)  # (n,)
    return out


# ---------------------------------------------------------------------------------------------------------
# the committed models: trained once by `python -m course_utils.passkey`, stored in data/passkey/

PASSKEY_DIR = REPO_ROOT / "data" / "passkey"


def save_retrieval_model(model: RetrievalLM, path: Path) -> None:
    """safetensors file with the config and the RoPE scaling the model was trained with in its metadata."""
    meta = {"config": json.dumps(asdict(model.cfg)), "scaling": json.dumps(model.scaling)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def load_retrieval_model(path: str | Path) -> RetrievalLM:
    """A RetrievalLM from `save_retrieval_model`'s file, in eval mode with its trained RoPE scaling."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no passkey model at {path}; train them with `python -m course_utils.passkey`")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    model = RetrievalLM(RetrievalConfig(**json.loads(meta["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.set_rope_scaling(json.loads(meta["scaling"]), seq_len=None).eval()


def main(argv: list[str] | None = None) -> None:
    """Train the RoPE, ALiBi and NoPE models at L and fine-tune the RoPE one with PI at `--pi-factor` x L.

    A model whose file is already in --out is kept (an interrupted run resumes with the next model); --force retrains.
    Each finished model is saved, and the log rewritten, at once.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=PASSKEY_DIR)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--pi-factor", type=int, default=8)
    parser.add_argument("--pi-steps", type=int, default=300)
    parser.add_argument("--force", action="store_true", help="retrain models whose files exist")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.json"
    record = json.loads(log_path.read_text()) if log_path.exists() and not args.force else {"models": {}}
    record.update(torch=torch.__version__, threads=torch.get_num_threads())
    pi = {"rope_type": "linear", "factor": float(args.pi_factor)}
    length = args.pi_factor * RetrievalConfig().train_length
    jobs = {position: (args.steps, {"batch_size": 32},
                       lambda position=position: train_retrieval(RetrievalConfig(position=position), steps=args.steps))
            for position in POSITION_TYPES}
    jobs[f"rope-pi{args.pi_factor}"] = (
        args.pi_steps, {"batch_size": 16, "from": "rope", "scaling": pi, "length": length},
        lambda: finetune_with_scaling(load_retrieval_model(args.out / "rope.safetensors"), pi, length,
                                      steps=args.pi_steps))
    for name, (steps, about, job) in jobs.items():
        path = args.out / f"{name}.safetensors"
        if path.exists() and not args.force:
            print(f"{name}: kept {path} (--force retrains it)", flush=True)
            continue
        t0 = time.time()
        model, log = job()
        save_retrieval_model(model, path)
        record["models"][name] = {"config": asdict(model.cfg), "steps": steps, **about,
                                  "seconds": round(time.time() - t0, 1), "log": log}
        log_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {record['models'][name]['seconds']} s, last log row {log[-1] if log else None}", flush=True)


if __name__ == "__main__":
    main()
