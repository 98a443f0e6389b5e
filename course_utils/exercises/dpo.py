"""Lecture 08 (DPO lab) exercise checks: DPO, SimPO and IPO losses, completion log-prob, the online pair sampler."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .runner import call, compare, run_check


def _check_pair_loss(title: str, loss_fn: Callable, seed: int, scale: float, betas: list[float], formula: Callable,
                     mistakes: list[tuple[Callable, str]], trials: int) -> None:
    """Shared trial of the reference-based pair losses: loss_fn(pc, pr, rc, rr, beta) against formula(gap, beta) in
    float64, gap = (pc - rc) - (pr - rr); `mistakes` lists (wrong formula, hint) pairs to recognise."""
    def trial():
        gen = torch.Generator().manual_seed(seed)
        for t in range(trials):
            B, beta = 2 + 2 * t, betas[t % len(betas)]
            pc, pr, rc, rr = (-scale * torch.rand(B, generator=gen, dtype=torch.float64) for _ in range(4))
            gap = (pc - rc) - (pr - rr)
            got = call(loss_fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
            if isinstance(got, tuple):
                got = got[0]
            problem = compare("losses", got, formula(gap, beta), atol=1e-6)
            if problem:
                same_shape = isinstance(got, torch.Tensor) and got.shape == gap.shape
                hint = next((h for wrong, h in mistakes
                             if same_shape and torch.allclose(got.double(), wrong(gap, beta), atol=1e-6)), "")
                return problem + f" (trial {t}, B={B}, beta={beta}){hint}"
        return None
    return run_check(title, trial)


def check_dpo_loss(dpo_loss_fn: Callable, trials: int = 4) -> None:
    """dpo_loss_fn(pc, pr, rc, rr, beta) -> per-pair losses (B,) = -log σ(β[(pc - rc) - (pr - rr)])."""
    return _check_pair_loss("DPO loss", dpo_loss_fn, 808, 30.0, [0.1, 0.5, 1.0, 3.0],
                            lambda gap, beta: -F.logsigmoid(beta * gap),
                            [(lambda gap, beta: -F.logsigmoid(-beta * gap),
                              " (sign flipped: the chosen log-ratio comes first)"),
                             (lambda gap, beta: -F.logsigmoid(gap), " (multiply the log-ratio difference by beta)")],
                            trials)


def check_simpo_loss(simpo_loss_fn: Callable, trials: int = 4) -> None:
    """simpo_loss_fn(chosen_avg, rejected_avg, beta, gamma) -> per-pair losses (B,) = -log σ(β·c - β·r - γ)."""
    def trial():
        gen = torch.Generator().manual_seed(809)
        for t in range(trials):
            B, beta, gamma = 3 + t, [2.0, 2.5, 1.0, 10.0][t % 4], [0.5, 1.0, 0.0, 3.0][t % 4]
            c, r = (-3 * torch.rand(B, generator=gen, dtype=torch.float64) for _ in range(2))
            expected = -F.logsigmoid(beta * c - beta * r - gamma)
            got = call(simpo_loss_fn, c.clone(), r.clone(), beta, gamma)
            if isinstance(got, tuple):
                got = got[0]
            problem = compare("losses", got, expected, atol=1e-6)
            if problem:
                hint = ""
                if isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.allclose(
                        got.double(), -F.logsigmoid(beta * (c - r - gamma)), atol=1e-6):
                    hint = " (gamma is in reward units: subtract it after multiplying by beta)"
                return problem + f" (trial {t}, beta={beta}, gamma={gamma}){hint}"
        return None
    return run_check("SimPO loss", trial)


def check_completion_logprob(completion_logprob: Callable, trials: int = 4) -> None:
    """completion_logprob(logits (B, T, V), input_ids (B, T), loss_mask (B, T)) -> (B,) summed log p of the masked
    tokens, where token t is predicted by logits at position t-1; compared with a float64 gather."""
    def trial():
        gen = torch.Generator().manual_seed(810)
        for t in range(trials):
            B, T, V = 1 + t, 5 + 2 * t, 7 + t
            logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * (1 + 5 * t)
            ids = torch.randint(0, V, (B, T), generator=gen)
            mask = torch.zeros(B, T, dtype=torch.bool)
            for b in range(B):
                start = int(torch.randint(1, T - 1, (1,), generator=gen))
                mask[b, start:T - int(torch.randint(0, 2, (1,), generator=gen))] = True
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
            expected = (logp * mask[:, 1:]).sum(-1)
            problem = compare("completion log-prob", call(completion_logprob, logits.clone(), ids.clone(), mask.clone()),
                              expected, atol=1e-6)
            if problem:
                unshifted = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
                got = completion_logprob(logits.clone(), ids.clone(), mask.clone())
                hint = (" (shift by one: logits[:, t-1] predict input_ids[:, t])"
                        if isinstance(got, torch.Tensor) and torch.allclose(got.double(), (unshifted * mask).sum(-1), atol=1e-6)
                        else "")
                return problem + f" (trial {t}, shape {(B, T, V)}){hint}"
        return None
    return run_check("completion log-prob", trial)


def check_ipo_loss(ipo_loss_fn: Callable, trials: int = 4) -> None:
    """ipo_loss_fn(pc, pr, rc, rr, beta) on per-token average log-probs -> per-pair losses (B,), Azar et al. 2023:
    the squared distance of the log-ratio gap from its target 1/(2β); compared with a float64 formula."""
    return _check_pair_loss("IPO loss", ipo_loss_fn, 811, 3.0, [0.1, 0.5, 1.0, 0.05],
                            lambda gap, beta: (gap - 1 / (2 * beta)) ** 2,
                            [(lambda gap, beta: (gap - 1 / beta) ** 2, " (the target is 1/(2β), not 1/β)"),
                             (lambda gap, beta: (beta * gap - 1 / 2) ** 2,
                              " (IPO does not multiply the gap by β: β sets the target)")],
                            trials)


def check_group_pairs(group_pairs_fn: Callable) -> None:
    """group_pairs_fn(task, replies) -> list of (chosen, rejected): one pair (a right reply, a wrong non-empty reply,
    both taken from `replies`) when the group has both, else []; judged with data.check_answer."""
    from ..data import check_answer, make_tasks

    def trial():
        task = make_tasks(1, "train", seed=3, families=["addition"])[0]
        right = task.reply
        wrong = right[:-1] + str((int(right[-1]) + 1) % 10)
        groups = {"mixed": [wrong, right, wrong, right], "all right": [right] * 4, "all wrong": [wrong] * 4,
                  "right and empty": [right, "", right, ""]}
        for name, replies in groups.items():
            got = call(group_pairs_fn, task, list(replies))
            if not isinstance(got, list):
                return f"{name} group: return a list of (chosen, rejected) tuples, got {type(got).__name__}"
            want = 1 if name == "mixed" else 0
            if len(got) != want:
                return (f"{name} group {replies}: expected {want} pair(s), got {len(got)}"
                        + (" (an empty reply is not a usable rejected reply)" if name == "right and empty" else ""))
            for pair in got:
                if not (isinstance(pair, tuple) and len(pair) == 2 and all(p in replies for p in pair)):
                    return f"{name} group: each pair must be a (chosen, rejected) tuple of replies from the group, got {pair!r}"
                chosen, rejected = pair
                if not check_answer(task, chosen) or check_answer(task, rejected) or not rejected:
                    return f"{name} group: chosen must be right and rejected wrong, got chosen {chosen!r}, rejected {rejected!r}"
        return None
    return run_check("online pair sampler", trial)
