"""Does more arithmetic in pretraining teach course-tiny 3-digit addition?

    python benchmarks/bench_pretrain_arithmetic.py --extra-addition 300000 --steps 4000   # ~2 min on one H100

Pretrains the course-tiny architecture on the usual corpus plus `--extra-addition` addition problems in prose
(train split only) and prints greedy exact-match accuracy on 200 held-out (test-split) problems every 1000 steps.

Measured on one H100 (bf16 autocast, batch 128 x 256, the committed course-tiny recipe otherwise):
    extra  300,000: step 1000 0.775, 2000 0.965, 3000 1.000, 4000 1.000  (123 s)
    extra  900,000: step 1000 0.845, 2000 0.965, 3000 1.000, 4000 1.000  (113 s)
The committed course-tiny (no extra problems, ~7% of documents are additions) scores 0.015 on the same test:
addition needs far more examples than the other task families.
"""

import argparse
import random
import time

import torch

from course_utils.data import TASK_FAMILIES, make_tasks, pretraining_corpus, task_as_text, task_split
from course_utils.env import device, seed_everything
from course_utils.pretrain import PretrainConfig, build_model, pack, train_steps, train_tokenizer


def addition_accuracy(model, tok, tasks) -> float:
    """Greedy exact match on prose prompts 'Question: What is a + b? Answer:'."""
    model.eval()
    tok.padding_side = "left"
    dev = next(model.parameters()).device
    enc = tok([f"Question: {t.prompt} Answer:" for t in tasks], return_tensors="pt", padding=True).to(dev)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    answers = [tok.decode(o[enc.input_ids.shape[1]:], skip_special_tokens=True).strip().rstrip(".").strip() for o in out]
    model.train()
    return sum(a == t.answer for a, t in zip(answers, tasks)) / len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra-addition", type=int, default=300_000)
    parser.add_argument("--steps", type=int, default=4_000)
    args = parser.parse_args()
    cfg = PretrainConfig(steps=args.steps)
    seed_everything(cfg.seed)
    rng, docs = random.Random(7), pretraining_corpus(cfg.n_documents, seed=cfg.seed)
    while len(docs) < cfg.n_documents + args.extra_addition:
        task = TASK_FAMILIES["addition"](rng)
        if task_split(task) == "train":
            docs.append(task_as_text(task, rng))
    random.Random(3).shuffle(docs)
    tok = train_tokenizer(pretraining_corpus(50_000, seed=cfg.seed), cfg.vocab_size)
    rows = pack(tok, docs, cfg.max_position_embeddings)  # (N, T)
    model = build_model(cfg, tok).to(device())
    tests = make_tasks(200, "test", seed=11, families=["addition"])
    t0 = time.time()

    def report(step: int, loss: float) -> None:
        if (step + 1) % 1000 == 0 or step + 1 == cfg.steps:
            print(f"extra={args.extra_addition} step {step + 1} loss {loss:.3f} "
                  f"held-out addition accuracy {addition_accuracy(model, tok, tests):.3f} ({time.time() - t0:.0f} s)")

    train_steps(model, rows, cfg, on_step=report)


if __name__ == "__main__":
    main()
