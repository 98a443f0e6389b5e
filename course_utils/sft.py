"""Supervised fine-tuning (SFT): chat-format examples with loss masking, padding vs packing, evaluation.

    python -m course_utils.sft                   # fine-tune course-tiny, write data/course-tiny-sft
    python -m course_utils.sft --steps 50 --out /tmp/sft   # a quick smoke run

Only the assistant's tokens are learned: every other label is -100, which cross-entropy ignores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checks import check_choice, check_int, check_items, check_number
from .data import Task, check_answer, make_eval_tasks, make_sft_conversations
from .evaluation import accuracy_table, correct_by_family, family_accuracy, majority_baselines  # noqa: F401
from .train import random_batches

IGNORE_INDEX = -100  # label value that cross-entropy skips (same as transformers / trl)


# ---- examples ---------------------------------------------------------------------------------

def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or len(messages) == 0:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content', got {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        roles = [m["role"] for m in messages]
        raise ValueError(f"messages has no assistant turn (roles {roles}); SFT needs at least one to learn from")


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) character spans of each assistant reply incl. its end-of-turn token])."""
    _check_messages(messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True) if i else ""
        if not text.startswith(prefix):
            raise ValueError("the tokenizer's chat template is not prefix-stable: rendering the first "
                             f"{i} messages is not a prefix of the whole conversation")
        start = max(len(prefix), cursor)
        idx = text.find(m["content"], start)
        if idx < 0:
            raise ValueError(f"could not find assistant message {i} in the rendered conversation")
        end = idx + len(m["content"])
        end += next((len(s) for s in specials if text.startswith(s, end)), 0)  # learn to end the turn too
        spans.append((start, end))
        cursor = end
    return text, spans


def build_sft_example(tokenizer, messages: list[dict], max_length: int | None = None) -> dict[str, list[int]]:
    """Tokenize a conversation: {"input_ids": [T], "labels": [T]} with every non-assistant label = -100.

    The assistant spans come from rendering the conversation prefix by prefix; the labels are not shifted
    (the model predicts labels[t+1] from input_ids[:t+1], as in transformers).
    """
    if max_length is not None:
        check_int("max_length", max_length, 2, allowed="None or an int >= 2")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenizer must be a fast (Rust) tokenizer: offsets are needed to align labels")
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if max_length is not None and len(ids) > max_length:
        raise ValueError(f"max_length={max_length} is too small: this conversation is {len(ids)} tokens long "
                         f"(raise max_length or shorten the conversation)")
    labels = [tok if any(s <= a < e for s, e in spans) else IGNORE_INDEX for tok, (a, _) in zip(ids, offsets)]
    return {"input_ids": list(ids), "labels": labels}


def collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples into a batch: input_ids, attention_mask, labels, each (B, T); padded labels are -100."""
    if not examples:
        raise ValueError("examples must be a non-empty list of build_sft_example outputs")
    T = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), T), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), T), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack(examples: list[dict], seq_len: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Greedily pack whole examples into rows of `seq_len` tokens.

    Returns input_ids, labels, position_ids (restart at 0 for each example) and doc_ids (-1 on padding), each (N, seq_len).
    """
    check_int("seq_len", seq_len, 2)
    too_long = [len(e["input_ids"]) for e in examples if len(e["input_ids"]) > seq_len]
    if too_long:
        raise ValueError(f"seq_len={seq_len} is smaller than an example ({max(too_long)} tokens)")
    rows, row = [], []
    for doc, e in enumerate(examples):
        if sum(len(x[1]["input_ids"]) for x in row) + len(e["input_ids"]) > seq_len:
            rows.append(row)
            row = []
        row.append((doc, e))
    if row:
        rows.append(row)
    out = {k: torch.full((len(rows), seq_len), v, dtype=torch.long)
           for k, v in (("input_ids", pad_token_id), ("labels", IGNORE_INDEX), ("position_ids", 0), ("doc_ids", -1))}
    for r, row in enumerate(rows):
        t = 0
        for doc, e in row:
            n = len(e["input_ids"])
            out["input_ids"][r, t:t + n] = torch.tensor(e["input_ids"])
            out["labels"][r, t:t + n] = torch.tensor(e["labels"])
            out["labels"][r, t] = IGNORE_INDEX  # never predict a new example's first token from the previous one
            out["position_ids"][r, t:t + n] = torch.arange(n)
            out["doc_ids"][r, t:t + n] = doc
            t += n
    return out


def packed_attention_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Causal block-diagonal mask for packed rows: (N, T) doc ids -> (N, T, T) bool, True = may attend."""
    if doc_ids.dim() != 2:
        raise ValueError(f"doc_ids must be (N, T), got shape {tuple(doc_ids.shape)}")
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # (N, T, T)
    return causal & same & (doc_ids[:, :, None] >= 0)


# ---- loss ---------------------------------------------------------------------------------------

def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens: logits (B, T, V), labels (B, T) with -100 = skip.

    Naive equivalent: F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100).
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor (token ids, -100 = skip), got dtype {labels.dtype}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= logits.shape[-1]))
    if bad.any():
        raise ValueError(f"labels must be -100 or token ids in [0, {logits.shape[-1]}), got {labels[bad][:5].tolist()}")
    target = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
    if not (target != IGNORE_INDEX).any():
        raise ValueError("labels has no labelled token after the first position: nothing to learn from")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    keep = target != IGNORE_INDEX
    nll = -logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (nll * keep).sum() / keep.sum()


def sft_loss_fn(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Loss function for train.train: forward the batch, then sft_loss."""
    dev = next(model.parameters()).device
    kwargs = {k: batch[k].to(dev) for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    return sft_loss(model(**kwargs).logits, batch["labels"].to(dev))


def add_neftune(model, alpha: float):
    """NEFTune (Jain et al. 2023, arXiv:2310.05914): while the model is in training mode, add uniform noise
    U(-s, s) with s = alpha / sqrt(L * d) to its input embeddings (B, L, d). Returns the hook handle; call
    `.remove()` to stop. Evaluation (model.eval()) sees no noise."""
    check_number("alpha", alpha, 0, low_open=True, finite=True, allowed="a positive number (the paper uses 5 to 15)")

    def noisy(module, inputs, output):
        if not module.training:
            return output
        scale = alpha / (output.shape[1] * output.shape[2]) ** 0.5
        return output + torch.zeros_like(output).uniform_(-scale, scale)

    return model.get_input_embeddings().register_forward_hook(noisy)


def make_batch_fn(examples: list[dict], batch_size: int, pad_token_id: int, seed: int = 0):
    """A deterministic data source for train.train: step -> a padded batch of `batch_size` random examples."""
    return random_batches(examples, batch_size, lambda rows: collate(rows, pad_token_id), seed)


# ---- evaluation --------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """Exact-match accuracy per task family and overall, with the completions."""

    per_family: dict[str, float]
    overall: float
    completions: list[str] = field(repr=False)
    correct: list[bool] = field(repr=False)


def _chat_prompt(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def _prose_prompt(tokenizer, prompt: str) -> str:
    return f"Question: {prompt} Answer:"


# How a task prompt is shown to the model: the chat template (what SFT teaches) or the prose seen in pretraining.
PROMPT_FORMATS = {"chat": _chat_prompt, "prose": _prose_prompt}


@torch.no_grad()
def greedy_continuations(model, tokenizer, texts: list[str], *, max_new_tokens: int, batch_size: int = 64,
                         stop_ids: tuple[int, ...] = ()) -> list[str]:
    """Greedy continuations of raw `texts` in left-padded batches, ending at EOS, <|im_end|> or any of `stop_ids`,
    decoded without special tokens; restores the model's train/eval mode and the tokenizer's padding side."""
    check_int("max_new_tokens", max_new_tokens)
    check_int("batch_size", batch_size)
    dev = next(model.parameters()).device
    was_training, old_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    stop = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"), *stop_ids}
    stop = sorted(t for t in stop if isinstance(t, int) and t >= 0 and t != tokenizer.unk_token_id)
    out_texts = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(dev)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tokenizer.pad_token_id)  # (B, T + new)
            out_texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out_texts


def generate_replies(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 40, batch_size: int = 64,
                     prompt_format: str = "chat") -> list[str]:
    """Greedy replies to user prompts (stop at <|im_end|> / EOS), decoded without special tokens."""
    check_choice("prompt_format", prompt_format, list(PROMPT_FORMATS))
    texts = [PROMPT_FORMATS[prompt_format](tokenizer, p) for p in prompts]
    replies = greedy_continuations(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if prompt_format == "prose":  # pretraining wrote "Answer: 42." -- drop the sentence's full stop
        replies = [r.strip().removesuffix(".") for r in replies]
    return replies


def evaluate_tasks(model, tokenizer, tasks: list[Task], *, max_new_tokens: int = 40, batch_size: int = 64,
                   prompt_format: str = "chat") -> EvalResult:
    """Exact-match accuracy of greedy replies on `tasks`, per family and overall."""
    check_items("tasks", tasks, Task, "data.Task")
    replies = generate_replies(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=max_new_tokens,
                               batch_size=batch_size, prompt_format=prompt_format)
    correct = [check_answer(t, r) for t, r in zip(tasks, replies)]
    return EvalResult(family_accuracy(tasks, correct), sum(correct) / len(correct), replies, correct)


# ---- LoRA through peft (course_utils.lora has the from-scratch version) ---------------------------

def add_peft_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                  target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")):
    """Wrap `model` with peft LoRA adapters (base weights frozen); returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    check_int("r", r)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def count_trainable(model) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


# ---- the committed checkpoint ------------------------------------------------------------------

@dataclass
class SFTRunConfig:
    """Settings for fine-tuning course-tiny into data/course-tiny-sft."""

    n_train: int = 40_000  # training conversations (train split)
    # Deliberately short (about 3 minutes on 2 CPU cores): labs 08-09 need a model that is right only part of the
    # time. 1,200 steps (lab 07's cpu profile, about 7 minutes) reach 100% on held-out addition.
    steps: int = 500  # optimizer steps
    batch_size: int = 32  # conversations per step
    lr: float = 1e-3  # peak AdamW learning rate
    warmup: int = 50  # linear warm-up steps, then cosine decay to 10%
    weight_decay: float = 0.0
    eval_per_family: int = 200  # test-split tasks per family for before/after accuracy
    seed: int = 0


def sft_train_run(cfg: SFTRunConfig, model, tokenizer, *, checkpoint_dir=None, log_every: int = 100) -> dict:
    """Full fine-tuning of `model` on the synthetic task conversations; returns a log dict with accuracies."""
    from .train import TrainConfig, train

    dev = next(model.parameters()).device
    tasks = make_eval_tasks(cfg.eval_per_family, "test", seed=cfg.seed + 1)
    before = evaluate_tasks(model, tokenizer, tasks)
    prose = evaluate_tasks(model, tokenizer, tasks, prompt_format="prose")  # what the base model knows
    convs = make_sft_conversations(cfg.n_train, "train", seed=cfg.seed)
    examples = [build_sft_example(tokenizer, c) for c in convs]
    batch_fn = make_batch_fn(examples, cfg.batch_size, tokenizer.pad_token_id, seed=cfg.seed)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                       log_every=log_every, seed=cfg.seed, checkpoint_dir=checkpoint_dir,
                       save_every=0 if checkpoint_dir is None else max(1, cfg.steps // 4))
    t0 = time.time()
    result = train(model, sft_loss_fn, batch_fn, tcfg)
    seconds = time.time() - t0
    after = evaluate_tasks(model, tokenizer, tasks)
    return {"config": asdict(cfg), "device": str(dev), "train_seconds": round(seconds, 1),
            **{f"accuracy_{name}": {**{k: round(v, 3) for k, v in ev.per_family.items()}, "overall": round(ev.overall, 3)}
               for name, ev in (("base_prose_prompt", prose), ("before", before), ("after", after))},
            "loss_every_50_steps": [round(x, 4) for x in result.losses[::50]]}


def main(argv: list[str] | None = None) -> None:
    from .env import REPO_ROOT, device as best_device, seed_everything
    from .models import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "course-tiny-sft")
    parser.add_argument("--steps", type=int, default=SFTRunConfig.steps)
    parser.add_argument("--batch-size", type=int, default=SFTRunConfig.batch_size)
    parser.add_argument("--lr", type=float, default=SFTRunConfig.lr)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
        parser.error(f"need steps >= 1, batch-size >= 1, lr > 0; got {args.steps}, {args.batch_size}, {args.lr}")
    cfg = SFTRunConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    seed_everything(cfg.seed)
    model, tokenizer = load_model("course-tiny", device=args.device or best_device())
    log = sft_train_run(cfg, model, tokenizer)
    log["device_name"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    log["torch"] = torch.__version__
    log["command"] = "python -m course_utils.sft " + " ".join(argv if argv is not None else sys.argv[1:])
    log["base_model"] = "data/course-tiny"
    model = model.to("cpu", torch.float16)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps({k: log[k] for k in ("train_seconds", "accuracy_before", "accuracy_after")}, indent=1))


if __name__ == "__main__":
    main()
