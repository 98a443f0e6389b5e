"""Lecture 07 (SFT lab) exercise checks: label masking, SFT loss, packed attention mask."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .runner import call, compare, run_check


def check_label_masking(mask_labels: Callable, trials: int = 5) -> None:
    """mask_labels(input_ids (T,), assistant_mask (T,)) -> labels (T,): the id where the mask is 1, else -100."""
    def trial():
        gen = torch.Generator().manual_seed(807)
        for t in range(trials):
            T = int(torch.randint(4, 30, (1,), generator=gen))
            ids = torch.randint(0, 963, (T,), generator=gen)
            mask = (torch.rand(T, generator=gen) < 0.4).long()
            expected = torch.tensor([int(i) if m else -100 for i, m in zip(ids.tolist(), mask.tolist())])
            got = call(mask_labels, ids.clone(), mask.clone())
            got = torch.as_tensor(got)
            if got.shape != expected.shape or not torch.equal(got.long(), expected):
                bad = [k for k in range(T) if got.numel() != T or int(got.view(-1)[k]) != int(expected[k])]
                return f"labels wrong at positions {bad[:5]} (trial {t}): keep the id where the mask is 1, else -100"
        return None
    return run_check("label masking", trial)


def check_sft_loss(sft_loss: Callable, trials: int = 5) -> None:
    """sft_loss(logits (B, T, V), labels (B, T)) -> mean next-token cross-entropy over labels != -100."""
    def trial():
        gen = torch.Generator().manual_seed(808)
        for t in range(trials):
            B, T, V = (int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(3, 12, (1,), generator=gen)),
                       int(torch.randint(5, 40, (1,), generator=gen)))
            logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 3
            labels = torch.randint(V, (B, T), generator=gen)
            labels[torch.rand(B, T, generator=gen) < 0.5] = -100
            labels[0, -1] = 1
            expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
            problem = compare("sft_loss", torch.as_tensor(call(sft_loss, logits.clone(), labels.clone())).reshape(()),
                              expected, atol=1e-6)
            if problem:
                return problem + " (remember: the logits at position t predict the label at t+1)"
        return None
    return run_check("SFT loss", trial)


def check_packed_mask(packed_mask: Callable, trials: int = 4) -> None:
    """packed_mask(doc_ids (N, T), -1 = padding) -> (N, T, T) bool: causal and within the same document."""
    def trial():
        gen = torch.Generator().manual_seed(809)
        for t in range(trials):
            N, T = int(torch.randint(1, 3, (1,), generator=gen)), int(torch.randint(4, 16, (1,), generator=gen))
            lengths = torch.randint(1, 6, (N, 8), generator=gen)
            doc_ids = torch.full((N, T), -1)
            for n in range(N):
                pos, d = 0, 0
                while pos < T - 1:
                    k = min(int(lengths[n, d % 8]), T - 1 - pos)
                    doc_ids[n, pos:pos + k] = d
                    pos, d = pos + k, d + 1
            expected = torch.zeros(N, T, T, dtype=torch.bool)
            for n in range(N):
                for i in range(T):
                    for j in range(i + 1):
                        expected[n, i, j] = bool(doc_ids[n, i] == doc_ids[n, j] and doc_ids[n, i] >= 0)
            got = torch.as_tensor(call(packed_mask, doc_ids.clone()))
            if got.shape != expected.shape:
                return f"mask has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            if not torch.equal(got.bool(), expected):
                return (f"{int((got.bool() != expected).sum())} entries differ (trial {t}): a token may see earlier "
                        "tokens of its own document only, and padding (-1) sees nothing")
        return None
    return run_check("packed attention mask", trial)
