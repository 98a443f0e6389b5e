"""Build course-tiny from nothing: train its BPE tokenizer, then pretrain a small Qwen3 model.

    python -m course_utils.pretrain                 # writes data/course-tiny (one H100: a few minutes; 2-core CPU: about a day)
    python -m course_utils.pretrain --steps 50 --out /tmp/tiny   # a quick smoke run

The corpus comes from `course_utils.data` with fixed seeds, so a rerun rebuilds the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import pretraining_corpus
from .env import device as best_device, seed_everything

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

# Qwen-style chat template; {% generation %} marks the assistant tokens for assistant-only losses.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class PretrainConfig:
    vocab_size: int = 1024  # BPE vocabulary, special tokens included
    hidden_size: int = 256  # d_model
    intermediate_size: int = 704  # SwiGLU hidden size (~2.75 x d_model)
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # query heads, head_dim 64
    num_key_value_heads: int = 2  # GQA: two query heads share each K/V head
    max_position_embeddings: int = 256  # context length trained on
    n_documents: int = 400_000  # training documents generated from data.py
    n_heldout_documents: int = 2_000  # held-out documents (another seed) for perplexity
    steps: int = 4_000  # optimizer steps
    batch_size: int = 128  # sequences of max_position_embeddings tokens per step
    lr: float = 2e-3  # peak AdamW learning rate (linear warm-up, cosine decay)
    warmup: int = 100  # warm-up steps
    weight_decay: float = 0.1
    seed: int = 0


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer that splits digits one by one (helps arithmetic), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                      additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                      model_max_length=None)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def pack(tokenizer, docs: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate documents separated by EOS and cut into rows: (N, seq_len) token ids."""
    ids = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)  # (N, T)


def build_model(cfg: PretrainConfig, tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.hidden_size // cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3ForCausalLM(config)


@torch.no_grad()
def perplexity(model, rows: torch.Tensor, batch_size: int = 64) -> float:
    """exp(mean next-token cross-entropy) over packed rows (N, T)."""
    model.eval()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = rows[i: i + batch_size].to(dev)
        logits = model(input_ids=batch).logits.float()  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1), reduction="sum")
        total, count = total + loss.item(), count + batch[:, 1:].numel()
    model.train()
    return math.exp(total / count)


def train_steps(model, rows: torch.Tensor, cfg: PretrainConfig, on_step=None) -> list[float]:
    """AdamW (warm-up, cosine decay) on random batches of packed rows (N, T); returns every step's loss.

    on_step(step, loss) is called after each optimizer step (for logging or evaluation).
    """
    dev = next(model.parameters()).device
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    losses = []
    for step in range(cfg.steps):
        batch = rows[torch.randint(len(rows), (cfg.batch_size,), generator=gen)].to(dev)  # (B, T)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def pretrain(cfg: PretrainConfig, out_dir: Path) -> dict:
    """Train tokenizer and model, save both (fp16 safetensors) with a training log; return the log."""
    seed_everything(cfg.seed)
    dev = best_device()
    t0 = time.time()
    docs = pretraining_corpus(cfg.n_documents, seed=cfg.seed)
    heldout = pretraining_corpus(cfg.n_heldout_documents, seed=cfg.seed + 1)
    tokenizer = train_tokenizer(docs[:50_000], cfg.vocab_size)
    train_rows = pack(tokenizer, docs, cfg.max_position_embeddings)
    heldout_rows = pack(tokenizer, heldout, cfg.max_position_embeddings)
    model = build_model(cfg, tokenizer).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters; {train_rows.numel():,} training tokens; device {dev}", flush=True)

    def log(step: int, loss: float) -> None:
        if step % 250 == 0 or step == cfg.steps - 1:
            print(f"step {step:5d}  loss {loss:.3f}", flush=True)

    t_train = time.time()
    losses = train_steps(model, train_rows, cfg, on_step=log)
    train_seconds = time.time() - t_train

    model = model.to("cpu", torch.float16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    ppl = perplexity(model.float(), heldout_rows)  # measured on the weights as saved (fp16 round trip)
    log = {"config": asdict(cfg), "n_params": n_params, "device": str(dev),
           "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "train_seconds": round(train_seconds, 1),
           "total_seconds": round(time.time() - t0, 1), "heldout_perplexity": round(ppl, 3),
           "loss_every_50_steps": [round(x, 4) for x in losses[::50]]}
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=1))
    print(f"held-out perplexity {ppl:.3f}; training {train_seconds:.0f} s", flush=True)
    return log


def main(argv: list[str] | None = None) -> None:
    from .models import COURSE_TINY_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=COURSE_TINY_DIR)
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size)
    parser.add_argument("--documents", type=int, default=PretrainConfig.n_documents)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.documents < 100:
        parser.error(f"need steps >= 1, batch-size >= 1, documents >= 100; got {args.steps}, {args.batch_size}, {args.documents}")
    pretrain(PretrainConfig(steps=args.steps, batch_size=args.batch_size, n_documents=args.documents), args.out)


if __name__ == "__main__":
    main()
