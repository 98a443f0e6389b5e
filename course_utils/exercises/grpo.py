"""Lecture 09 (GRPO lab) exercise checks: group advantages, k3 KL, clipped surrogate, dynamic sampling's filter."""

from __future__ import annotations

from typing import Callable

import torch

from .runner import call, compare, run_check


def check_group_advantages(group_advantages: Callable, trials: int = 4) -> None:
    """group_advantages(rewards (N,), group_size) -> (N,): (r - group mean) / (unbiased group std + 1e-4), as trl."""
    def trial():
        gen = torch.Generator().manual_seed(909)
        for t in range(trials):
            G, n_groups = (2, 4, 8, 8)[t % 4], 1 + t
            r = torch.randint(0, 3, (n_groups * G,), generator=gen).to(torch.float64)
            if t == trials - 1:
                r[:G] = 1.0  # a group where every completion got the same reward
            grouped = r.view(n_groups, G)  # (groups, G)
            expected = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).reshape(-1)
            got = call(group_advantages, r.clone(), G)
            if isinstance(got, torch.Tensor) and torch.isnan(got).any():
                return "NaN in the advantages: a group with equal rewards must give 0 (add 1e-4 to the std)"
            problem = compare("group_advantages(rewards, G)", got, expected, atol=1e-6)
            if problem:
                hint = " (use the unbiased std, torch.std's default, and add 1e-4)" if "differs" in problem else ""
                return problem + f" for G={G}, rewards {r.tolist()}" + hint
        return None
    return run_check("group advantages", trial)


def check_k3_kl(k3_kl: Callable, trials: int = 4) -> None:
    """k3_kl(logps, ref_logps) -> per-token exp(r - l) - (r - l) - 1, an unbiased, never-negative estimate of KL."""
    def trial():
        gen = torch.Generator().manual_seed(910)
        for t in range(trials):
            logps = -torch.rand(2 + t, 3 + 2 * t, generator=gen, dtype=torch.float64) * 4
            ref = logps + torch.randn(logps.shape, generator=gen, dtype=torch.float64) * (0.1 + t)
            d = ref - logps
            problem = compare("k3_kl(logps, ref_logps)", call(k3_kl, logps.clone(), ref.clone()),
                              torch.exp(d) - d - 1, atol=1e-8, rtol=1e-8)
            if problem:
                return problem + " (r - l means ref_logps - logps)"
        return None
    return run_check("k3 KL estimator", trial)


def check_clipped_surrogate(clipped_surrogate: Callable, trials: int = 4) -> None:
    """clipped_surrogate(logps, old_logps, advantages (N,), clip_eps) -> per-token loss -min(ρA, clip(ρ, 1±ε)A)."""
    def trial():
        gen = torch.Generator().manual_seed(911)
        for t in range(trials):
            N, C, eps = 3 + t, 4 + t, (0.1, 0.2, 0.3, 0.2)[t % 4]
            logps = -torch.rand(N, C, generator=gen, dtype=torch.float64) * 3
            old = logps + torch.randn(N, C, generator=gen, dtype=torch.float64) * 0.4
            adv = torch.randn(N, generator=gen, dtype=torch.float64)
            ratio = torch.exp(logps - old)
            a = adv[:, None]
            expected = -torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
            problem = compare("clipped_surrogate(...)", call(clipped_surrogate, logps.clone(), old.clone(), adv.clone(), eps),
                              expected, atol=1e-8)
            if problem:
                return problem + f" (clip_eps={eps}; advantages are per sequence: broadcast them over tokens)"
        return None
    return run_check("clipped surrogate", trial)


def check_informative_groups(informative_groups: Callable, trials: int = 5) -> None:
    """informative_groups(rewards (N,), group_size) -> (N / G,) bool: True where a group's rewards are not all equal."""
    def trial():
        gen = torch.Generator().manual_seed(912)
        for t in range(trials):
            G, n_groups = (2, 4, 8, 3, 5)[t % 5], 2 + t
            r = torch.randint(0, 2, (n_groups * G,), generator=gen).to(torch.float32) * (0.5 if t == 3 else 1.0)
            r[:G] = 1.0  # an all-right group
            r[G:2 * G] = torch.linspace(0.1, 0.1 + 1e-6, G)  # rewards that differ only a little: still informative
            expected = torch.tensor([len(set(g.tolist())) > 1 for g in r.view(n_groups, G)])
            got = call(informative_groups, r.clone(), G)
            if isinstance(got, torch.Tensor) and got.dtype != torch.bool:
                return f"informative_groups should return a bool tensor, got dtype {got.dtype}"
            problem = compare("informative_groups(rewards, G)", got, expected)
            if problem:
                hint = (" (one entry per group, not per completion)" if isinstance(got, torch.Tensor)
                        and got.numel() == r.numel() else " (compare each reward with its group's first; a small spread still counts)")
                return problem + f" for G={G}, rewards {r.tolist()}" + hint
        return None
    return run_check("dynamic sampling filter", trial)
