"""The same preference training with trl's DPOTrainer (full or LoRA), for comparison with ours."""

from __future__ import annotations

import warnings

import torch

from ..checks import check_int, check_items, check_number
from .pairs import PreferencePair


def to_trl_dataset(pairs: list[PreferencePair]):
    """A datasets.Dataset in trl's conversational preference format: prompt / chosen / rejected message lists."""
    from datasets import Dataset

    check_items("pairs", pairs, PreferencePair)
    return Dataset.from_list([{"prompt": [{"role": "user", "content": p.prompt}],
                               "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def trl_dpo_train(model, tokenizer, pairs: list[PreferencePair], output_dir: str, *, steps: int = 10,
                  batch_size: int = 8, lr: float = 5e-4, beta: float = 0.1, lora_r: int | None = None,
                  seed: int = 0, logging_steps: int = 1, quiet: bool = True):
    """Train with trl's DPOTrainer (loss_type="sigmoid"), optionally through a peft LoRA config; returns the trainer.

    The reference model is a frozen copy (full fine-tuning) or the base with adapters off (LoRA), as trl does.
    quiet: no progress bars or printed log dicts (the logs stay in trainer.state.log_history; see trl_history).
    """
    from trl import DPOConfig, DPOTrainer

    for name, v in (("steps", steps), ("batch_size", batch_size)):
        check_int(name, v)
    check_number("beta", beta, 0, low_open=True, finite=True)
    peft_config = None
    if lora_r is not None:
        from peft import LoraConfig

        check_int("lora_r", lora_r, allowed="None or a positive int")
        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # trl 1.16 calls deprecated gradient-checkpointing names
        args = DPOConfig(output_dir=str(output_dir), loss_type=["sigmoid"], beta=beta, learning_rate=lr, max_steps=steps,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                         lr_scheduler_type="constant", warmup_steps=0, logging_steps=logging_steps, save_strategy="no",
                         report_to="none", disable_tqdm=True, seed=seed, data_seed=seed,
                         use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, gradient_checkpointing=False,
                         max_length=None, dataloader_num_workers=0)
        if quiet:
            from datasets.utils.logging import disable_progress_bar
            from transformers import PrinterCallback

            disable_progress_bar()
        trainer = DPOTrainer(model=model, args=args, train_dataset=to_trl_dataset(pairs), processing_class=tokenizer,
                             peft_config=peft_config)
        if quiet:
            trainer.remove_callback(PrinterCallback)  # the per-step log dicts stay in trainer.state.log_history
        trainer.train()
    return trainer


def trl_history(trainer, key: str) -> list[float]:
    """The per-step values of one logged metric (e.g. "loss", "rewards/accuracies") from a trl trainer."""
    return [row[key] for row in trainer.state.log_history if key in row and "train_runtime" not in row]
