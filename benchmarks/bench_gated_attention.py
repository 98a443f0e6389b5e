"""Attention sinks with and without the attention-output gate (Qiu et al. 2025): train norms.TinyLM twice per seed,
the same way except for the gate, and measure first-token attention, massive activations and held-out loss.

    python benchmarks/bench_gated_attention.py          # about 12 min on 2 CPU cores; writes the JSON below

Every row starts with <|endoftext|>, as documents do in pre-training, so the first token is always the same.
Results: benchmarks/results/gated_attention_sinks.json (plotted in notebooks/01_attention.ipynb, section 1.6).
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import torch

import course_utils as cu
from course_utils import attention, norms
from course_utils.moe import corpus_rows

OUT = pathlib.Path(__file__).parent / "results" / "gated_attention_sinks.json"
CONFIG = dict(d_model=64, n_layers=4, n_heads=4, seq_len=128, batch_size=16, steps=1000, lr=3e-3, seeds=[0, 1, 2])


def with_bos(rows: torch.Tensor, bos: int) -> torch.Tensor:
    """Prepend the token `bos` to every row: (N, T) -> (N, T + 1)."""
    return torch.cat([torch.full((rows.shape[0], 1), bos, dtype=rows.dtype), rows], dim=1)


def main() -> None:
    _, tok = cu.load_model(device="cpu")
    c = CONFIG
    rows = with_bos(corpus_rows(tok, 3000, c["seq_len"] - 1, seed=1), tok.eos_token_id)
    heldout = with_bos(corpus_rows(tok, 100, c["seq_len"] - 1, seed=99)[:32], tok.eos_token_id)
    results = {"config": c, "runs": []}
    for seed in c["seeds"]:
        for gated in (False, True):
            start = time.time()
            losses, model = norms.train_tiny_lm("pre", rows, len(tok), steps=c["steps"], lr=c["lr"], n_layers=c["n_layers"],
                                                d_model=c["d_model"], n_heads=c["n_heads"], batch_size=c["batch_size"],
                                                seed=seed, return_model=True, norm="rms", gated=gated)
            stats = attention.sink_statistics(model, heldout)
            with torch.no_grad():
                heldout_loss = norms.lm_loss(model(heldout), heldout).item()
            run = {"seed": seed, "gated": gated, "heldout_loss": heldout_loss, "final_train_loss": losses[-1],
                   "seconds": round(time.time() - start, 1),
                   **{k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}}
            run["gate_mean"] = [None if math.isnan(v) else v for v in run["gate_mean"]]  # JSON has no NaN
            results["runs"].append(run)
            print(f"seed {seed} gated={gated!s:5}: held-out loss {heldout_loss:.3f}; first-token weight per layer "
                  f"{[round(sum(h) / len(h), 3) for h in run['first_token_weight']]} (uniform {run['uniform']:.3f}); "
                  f"max|h| at token 0 / median {[round(v, 1) for v in run['massive_first']]}; {run['seconds']} s",
                  flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
