"""Lecture 10 (RLHF lab) exercise checks: the Bradley–Terry loss, GAE, RLOO's leave-one-out advantage."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .runner import call, compare, run_check


def check_bradley_terry(bradley_terry: Callable, trials: int = 4) -> None:
    """bradley_terry(chosen_rewards (B,), rejected_rewards (B,)) -> per-pair loss -log σ(r_c - r_r), (B,)."""
    def trial():
        gen = torch.Generator().manual_seed(1001)
        for t in range(trials):
            rc, rr = (torch.randn(3 + t, generator=gen, dtype=torch.float64) * (1 + 999 * (t == trials - 1))
                      for _ in range(2))
            expected = -F.logsigmoid(rc - rr)
            got = call(bradley_terry, rc.clone(), rr.clone())
            if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
                return "inf or NaN for large reward gaps: use F.logsigmoid, not log(sigmoid(...))"
            problem = compare("bradley_terry(chosen, rejected)", got, expected, atol=1e-8)
            if problem:
                return problem + f" for chosen {rc.tolist()}, rejected {rr.tolist()}"
        return None
    return run_check("Bradley-Terry loss", trial)


def _gae_loop(rewards, values, gamma, lam):
    N, C = rewards.shape
    adv = torch.zeros_like(rewards)
    for i in range(N):
        for t in range(C):
            total = 0.0
            for k in range(t, C):
                v_next = values[i, k + 1] if k + 1 < C else 0.0
                total += (gamma * lam) ** (k - t) * (rewards[i, k] + gamma * v_next - values[i, k])
            adv[i, t] = total
    return adv


def check_gae(gae: Callable, trials: int = 4) -> None:
    """gae(rewards (N, C), values (N, C), gamma, lam) -> advantages (N, C); the value after the last token is 0."""
    def trial():
        gen = torch.Generator().manual_seed(1002)
        for t in range(trials):
            N, C = 2 + t, 3 + t
            g, lm = ((1.0, 0.95), (0.9, 1.0), (0.99, 0.0), (0.8, 0.5))[t % 4]
            r = torch.randn(N, C, generator=gen, dtype=torch.float64)
            v = torch.randn(N, C, generator=gen, dtype=torch.float64)
            got = call(gae, r.clone(), v.clone(), g, lm)
            if isinstance(got, tuple):
                got = got[0]
            problem = compare("gae(rewards, values, gamma, lam)", got, _gae_loop(r, v, g, lm), atol=1e-8)
            if problem:
                return problem + f" (gamma={g}, lam={lm}; go backwards: A_t = delta_t + gamma*lam*A_(t+1))"
        return None
    return run_check("generalized advantage estimation", trial)


def check_rloo_advantages(rloo_advantages: Callable, trials: int = 4) -> None:
    """rloo_advantages(rewards (N,), group_size) -> (N,): each reward minus the mean of the other rewards of its group."""
    def trial():
        gen = torch.Generator().manual_seed(1003)
        for t in range(trials):
            G, groups = (2, 4, 3, 8)[t % 4], 1 + t
            r = torch.randn(groups * G, generator=gen, dtype=torch.float64)
            grouped = r.view(groups, G)
            expected = (grouped - (grouped.sum(1, keepdim=True) - grouped) / (G - 1)).reshape(-1)
            problem = compare("rloo_advantages(rewards, G)", call(rloo_advantages, r.clone(), G), expected, atol=1e-10)
            if problem:
                return problem + f" for G={G} (the baseline leaves the sample itself out: divide by G - 1)"
        return None
    return run_check("RLOO advantage", trial)
