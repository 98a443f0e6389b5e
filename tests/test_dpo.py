"""The DPO family (DPO/cDPO, rDPO, IPO, hinge, KTO, ORPO, SimPO): parity with trl's own loss code run on fake trainers,
float64 log-prob references, hand-worked values, the training wiring of each method, bad inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from course_utils import dpo
from course_utils.data import Task, check_answer, make_tasks


# ---- trl's own loss code as the reference -------------------------------------------------------------

class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def gather_for_metrics(x):
        return x


def _trl_dpo(pc, pr, rc, rr, beta, loss_type="sigmoid", *, label_smoothing=0.0, lengths=None):
    """Run trl 1.16's DPOTrainer._compute_loss (one `loss_type`) on given sequence log-probs (summed over tokens).

    A stub model returns per-token log-probs with each row's whole sum pc / pr on its last completion token (exact
    sums); `lengths` (2B,) sets each row's completion-token count (default 3), which trl's "ipo" divides by.
    Reference log-probs are passed as precomputed. Returns (mean loss, trl's logged metrics).
    """
    from trl import DPOTrainer

    B = pc.shape[0]
    lengths = torch.full((2 * B,), 3) if lengths is None else lengths
    T = int(lengths.max()) + 3  # at least 3 prompt tokens in every row
    completion_mask = (torch.arange(T) >= T - lengths[:, None]).long()  # (2B, T): the last lengths[i] tokens
    per_token = torch.zeros(2 * B, T - 1, dtype=pc.dtype)
    per_token[:, -1] = torch.cat([pc, pr])  # shifted position T-2 scores the last token

    def model(**kwargs):
        zeros = torch.zeros(2 * B, T - 1)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros(2 * B, T - 1, dtype=torch.bool))

    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", loss_types=[loss_type],
        loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=label_smoothing,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    loss = DPOTrainer._compute_loss(fake_self, model, inputs, False)
    return loss, {k: v[-1] for k, v in fake_self._metrics["train"].items()}


def _trl_sigmoid(pc, pr, rc, rr, beta):
    return _trl_dpo(pc, pr, rc, rr, beta, "sigmoid")


def _random_logps(B, gen, dtype=torch.float64):
    base = -20 * torch.rand(4, B, generator=gen, dtype=dtype) - 1
    return base + torch.randn(4, B, generator=gen, dtype=dtype)  # pc, pr, rc, rr


@pytest.mark.parametrize("B,beta", [(1, 0.1), (5, 0.1), (16, 0.5), (7, 2.0)])
def test_dpo_loss_matches_trl_sigmoid(B, beta):
    gen = torch.Generator().manual_seed(B * 100 + int(beta * 10))
    pc, pr, rc, rr = _random_logps(B, gen)
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, beta)
    trl_loss, m = _trl_sigmoid(pc, pr, rc, rr, beta)
    diff = abs(losses.mean().item() - trl_loss.item())
    assert diff < 1e-9, f"mean loss vs trl: max_diff {diff}"
    for name, mine, theirs in (("rewards/chosen", r_c.mean(), m["rewards/chosen"]),
                               ("rewards/rejected", r_r.mean(), m["rewards/rejected"]),
                               ("rewards/margins", (r_c - r_r).mean(), m["rewards/margins"]),
                               ("rewards/accuracies", (r_c > r_r).double().mean(), m["rewards/accuracies"])):
        tol = 1e-6 if name == "rewards/accuracies" else 1e-9  # trl averages the 0/1 accuracies in float32
        assert abs(mine.item() - theirs) < tol, f"{name}: max_diff {abs(mine.item() - theirs)}"


def test_dpo_loss_per_pair_matches_trl():
    gen = torch.Generator().manual_seed(7)
    pc, pr, rc, rr = _random_logps(6, gen)
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, 0.3)
    for i in range(6):  # trl only returns the batch mean: score each pair alone
        trl_loss, m = _trl_sigmoid(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], 0.3)
        diffs = [abs(losses[i].item() - trl_loss.item()), abs(r_c[i].item() - m["rewards/chosen"]),
                 abs(r_r[i].item() - m["rewards/rejected"])]
        assert max(diffs) < 1e-9, f"pair {i}: max_diff {max(diffs)}"


def test_dpo_loss_float32_and_gradients_match_trl():
    gen = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = _random_logps(8, gen, torch.float32)
    a, b = pc.clone().requires_grad_(), pc.clone().requires_grad_()
    dpo.dpo_loss(a, pr, rc, rr, 0.1)[0].mean().backward()
    _trl_sigmoid(b, pr, rc, rr, 0.1)[0].backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-5)


def test_dpo_label_smoothing_hand_worked():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -1.5, -2.0))
    # chosen log-ratio 0.5, rejected -1.0: beta * 1.5 = 0.75; conservative DPO with eps = 0.1
    expected = 0.9 * math.log1p(math.exp(-0.75)) + 0.1 * math.log1p(math.exp(0.75))
    losses, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, 0.5, label_smoothing=0.1)
    assert abs(losses.item() - expected) < 1e-12, f"max_diff {abs(losses.item() - expected)}"
    assert abs(r_c.item() - 0.25) < 1e-12 and abs(r_r.item() + 0.5) < 1e-12
    plain = dpo.dpo_loss(pc, pr, rc, rr, 0.5)[0].item()
    assert abs(plain - math.log1p(math.exp(-0.75))) < 1e-12


def test_simpo_loss_hand_worked():
    losses, r_c, r_r = dpo.simpo_loss(torch.tensor([-1.0, -0.5], dtype=torch.float64),
                                      torch.tensor([-2.0, -0.5], dtype=torch.float64), beta=2.0, gamma=1.0)
    # pair 0: 2*(-1) - 2*(-2) - 1 = 1 -> log(1 + e^-1); pair 1: 0 - 1 = -1 -> log(1 + e^1)
    expected = torch.tensor([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))], dtype=torch.float64)
    assert (losses - expected).abs().max() < 1e-12, f"max_diff {(losses - expected).abs().max()}"
    assert torch.equal(r_c, torch.tensor([-2.0, -1.0], dtype=torch.float64))
    assert torch.equal(r_r, torch.tensor([-4.0, -1.0], dtype=torch.float64))


# ---- the rest of the family vs trl: IPO, hinge, rDPO (DPOTrainer), KTO (KTOTrainer), ORPO, SimPO (experimental) ----

FAMILY_CASES = [(1, 0.1, 0.1, 0), (5, 0.1, 0.2, 1), (16, 0.5, 0.05, 2), (7, 2.0, 0.4, 3)]  # B, beta, eps, seed


def _family_inputs(B, seed, dtype=torch.float64):
    """Random summed log-probs pc, pr, rc, rr (B,) and completion lengths (2B,) in 1..8."""
    gen = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = _random_logps(B, gen, dtype)
    lengths = torch.randint(1, 9, (2 * B,), generator=gen)
    return pc, pr, rc, rr, lengths


def _ours(loss_type, pc, pr, rc, rr, beta, eps, lengths):
    """(losses (B,), chosen_rewards or None, rejected_rewards or None) from our loss for trl's loss_type."""
    if loss_type == "ipo":  # ours takes per-token averages; trl divides its summed log-ratios by the lengths
        nc, nr = lengths.to(pc.dtype).chunk(2)
        return dpo.ipo_loss(pc / nc, pr / nr, rc / nc, rr / nr, beta), None, None
    if loss_type == "hinge":
        return dpo.hinge_loss(pc, pr, rc, rr, beta)
    return dpo.robust_dpo_loss(pc, pr, rc, rr, beta, eps)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust"])
@pytest.mark.parametrize("B,beta,eps,seed", FAMILY_CASES)
def test_ipo_hinge_robust_match_trl_per_pair(loss_type, B, beta, eps, seed):
    pc, pr, rc, rr, lengths = _family_inputs(B, seed)
    if loss_type == "hinge":  # put about half the pairs inside the margin, where the hinge is not zero
        rc = pc - pr + rr - torch.linspace(-1.5, 1.5, B, dtype=pc.dtype) / beta
    losses, r_c, r_r = _ours(loss_type, pc, pr, rc, rr, beta, eps, lengths)
    trl_mean, m = _trl_dpo(pc, pr, rc, rr, beta, loss_type, label_smoothing=eps, lengths=lengths)
    diff = abs(losses.mean().item() - trl_mean.item())
    assert losses.shape == (B,) and diff < 1e-9, f"{loss_type} mean loss vs trl: max_diff {diff}"
    if r_c is not None:
        rdiff = max(abs(r_c.mean().item() - m["rewards/chosen"]), abs(r_r.mean().item() - m["rewards/rejected"]))
        assert rdiff < 1e-9, f"{loss_type} rewards vs trl: max_diff {rdiff}"
    for i in range(B):  # trl only returns the batch mean: score each pair alone
        one = _trl_dpo(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], beta, loss_type, label_smoothing=eps,
                       lengths=lengths[[i, B + i]])[0]
        diff = abs(losses[i].item() - one.item())
        assert diff < 1e-9, f"{loss_type} pair {i}: max_diff {diff}"


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust"])
def test_ipo_hinge_robust_gradients_match_trl(loss_type):
    pc, pr, rc, rr, lengths = _family_inputs(6, 11)
    rc = pc - pr + rr - torch.linspace(-1.5, 1.5, 6, dtype=pc.dtype) / 0.3  # hinge: some pairs inside the margin
    mine = [t.clone().requires_grad_() for t in (pc, pr)]
    theirs = [t.clone().requires_grad_() for t in (pc, pr)]
    _ours(loss_type, *mine, rc, rr, 0.3, 0.2, lengths)[0].mean().backward()
    _trl_dpo(*theirs, rc, rr, 0.3, loss_type, label_smoothing=0.2, lengths=lengths)[0].backward()
    for a, b in zip(mine, theirs):
        diff = (a.grad - b.grad).abs().max().item()
        assert diff < 1e-12 and a.grad.abs().max() > 0, f"{loss_type} gradient vs trl: max_diff {diff}"


def test_robust_dpo_hand_worked_and_unbiased():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -1.5, -2.0))
    ell = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log σ(x)
    # β·Δ = 0.5 · 1.5 = 0.75; eps = 0.1: (0.9 ℓ(0.75) - 0.1 ℓ(-0.75)) / 0.8
    expected = (0.9 * ell(0.75) - 0.1 * ell(-0.75)) / 0.8
    got = dpo.robust_dpo_loss(pc, pr, rc, rr, 0.5, 0.1)[0].item()
    assert abs(got - expected) < 1e-12, f"max_diff {abs(got - expected)}"
    # unbiased: averaged over the label noise (flip with probability eps) it is the clean DPO loss; cDPO is not
    flip = dpo.robust_dpo_loss(pr, pc, rr, rc, 0.5, 0.1)[0].item()
    assert abs(0.9 * got + 0.1 * flip - ell(0.75)) < 1e-12
    c, c_flip = dpo.dpo_loss(pc, pr, rc, rr, 0.5, label_smoothing=0.1)[0].item(), dpo.dpo_loss(
        pr, pc, rr, rc, 0.5, label_smoothing=0.1)[0].item()
    assert abs(0.9 * c + 0.1 * c_flip - ell(0.75)) > 1e-2
    assert abs(dpo.robust_dpo_loss(pc, pr, rc, rr, 0.5)[0].item() - ell(0.75)) < 1e-12  # eps = 0: plain DPO


def test_ipo_and_hinge_hand_worked():
    pc, pr, rc, rr = (torch.tensor([v, v], dtype=torch.float64) for v in (-1.0, -3.0, -1.5, -2.0))  # Δ = 1.5
    assert torch.allclose(dpo.ipo_loss(pc, pr, rc, rr, 0.5), torch.tensor([0.25, 0.25], dtype=torch.float64))  # (1.5-1)²
    assert dpo.ipo_loss(pc, pr, rc, rr, 1 / 3).abs().max() < 1e-12  # at the target margin 1/(2β) = 1.5
    losses, r_c, r_r = dpo.hinge_loss(pc, pr, rc, rr, 0.5)  # 1 - 0.75
    assert torch.allclose(losses, torch.tensor([0.25, 0.25], dtype=torch.float64)) and r_c[0] == 0.25 and r_r[0] == -0.5
    assert dpo.hinge_loss(pc, pr, rc, rr, 1.0)[0].abs().max() == 0  # margin 1.5 >= 1: nothing to learn


# KTO

def _trl_kto(policy_logps, ref_logps, desirable, kl_logps, ref_kl_logps, beta, desirable_weight, undesirable_weight):
    """Run trl 1.16's KTOTrainer._compute_loss (loss_type="kto") on given summed log-probs; returns its mean loss.

    The stub model puts each row's sum on its last token; the mismatched-pair (KL) log-probs come from a faked
    _compute_kl_logps, the reference ones (ref_logps, ref_KL_logps) are precomputed in the batch.
    """
    from trl import KTOTrainer

    N, T = policy_logps.shape[0], 5
    per_token = torch.zeros(N, T - 1, dtype=policy_logps.dtype)
    per_token[:, -1] = policy_logps

    def model(**kwargs):
        zeros = torch.zeros(N, T - 1)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros)

    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=beta, desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight, _compute_kl_logps=lambda model, batch: kl_logps,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    completion_mask = torch.zeros(N, T, dtype=torch.long)
    completion_mask[:, 3:] = 1
    batch = {"input_ids": torch.ones(N, T, dtype=torch.long), "attention_mask": torch.ones(N, T, dtype=torch.long),
             "completion_mask": completion_mask, "label": desirable, "ref_logps": ref_logps,
             "ref_KL_logps": ref_kl_logps}
    return KTOTrainer._compute_loss(fake_self, model, batch, False), fake_self._metrics["train"]


@pytest.mark.parametrize("N,beta,wd,wu,kl_shift,seed", [(1, 0.1, 1.0, 1.0, 2.0, 0), (6, 0.1, 1.0, 1.33, 3.0, 1),
                                                         (9, 0.5, 0.7, 1.0, -4.0, 2), (16, 2.0, 1.0, 1.0, 0.5, 3)])
def test_kto_loss_matches_trl(N, beta, wd, wu, kl_shift, seed):
    gen = torch.Generator().manual_seed(seed)
    policy, ref = -20 * torch.rand(2, N, generator=gen, dtype=torch.float64) - 1
    policy = ref + 3 * torch.randn(N, generator=gen, dtype=torch.float64)
    desirable = torch.rand(N, generator=gen) < 0.5
    desirable[0] = True  # at least one of each (when N > 1)
    desirable[-1] = N == 1 or False
    kl_ref = -20 * torch.rand(N, generator=gen, dtype=torch.float64) - 1  # mismatched (x_i, y_j) completions
    kl_policy = kl_ref + kl_shift + torch.randn(N, generator=gen, dtype=torch.float64)
    z = (kl_policy - kl_ref).mean().clamp(min=0)  # kl_shift < 0: clamped to 0, as trl does
    losses, rewards = dpo.kto_loss(policy, ref, desirable, z, beta, wd, wu)
    trl_mean, m = _trl_kto(policy, ref, desirable, kl_policy, kl_ref, beta, wd, wu)
    diff = abs(losses.mean().item() - trl_mean.item())
    assert losses.shape == rewards.shape == (N,) and diff < 1e-9, f"KTO mean loss vs trl: max_diff {diff}"
    assert abs(z.item() - m["kl"][-1]) < 1e-12
    rdiff = abs(rewards[desirable].mean().item() - m["rewards/chosen"][-1])
    if (~desirable).any():
        rdiff = max(rdiff, abs(rewards[~desirable].mean().item() - m["rewards/rejected"][-1]))
    assert rdiff < 1e-9, f"KTO rewards vs trl: max_diff {rdiff}"
    for i in range(N):  # each example alone, same reference point
        one = _trl_kto(policy[i:i + 1], ref[i:i + 1], desirable[i:i + 1], kl_policy, kl_ref, beta, wd, wu)[0]
        diff = abs(losses[i].item() - one.item())
        assert diff < 1e-9, f"KTO example {i} (desirable={bool(desirable[i])}): max_diff {diff}"


def test_kto_gradients_match_trl_and_hand_worked():
    gen = torch.Generator().manual_seed(5)
    ref = -10 * torch.rand(8, generator=gen, dtype=torch.float64) - 1
    policy = ref + torch.randn(8, generator=gen, dtype=torch.float64)
    desirable = torch.tensor([True, False] * 4)
    kl_ref = -10 * torch.rand(8, generator=gen, dtype=torch.float64)
    kl_policy = kl_ref + 0.3
    a, b = policy.clone().requires_grad_(), policy.clone().requires_grad_()
    dpo.kto_loss(a, ref, desirable, (kl_policy - kl_ref).mean(), 0.2, 1.0, 1.5)[0].mean().backward()
    _trl_kto(b, ref, desirable, kl_policy, kl_ref, 0.2, 1.0, 1.5)[0].backward()
    diff = (a.grad - b.grad).abs().max().item()
    assert diff < 1e-12 and a.grad.abs().min() > 0, f"KTO gradient vs trl: max_diff {diff}"
    # r = 1 on a desirable example, z = 0.5, β = 2: 1 - σ(1); undesirable, r = 0: 1.5 · (1 - σ(1))
    losses, rewards = dpo.kto_loss(torch.tensor([-1.0, -2.0], dtype=torch.float64),
                                   torch.tensor([-2.0, -2.0], dtype=torch.float64), torch.tensor([True, False]),
                                   torch.tensor(0.5), beta=2.0, undesirable_weight=1.5)
    s1 = 1 / (1 + math.exp(-1.0))
    assert abs(losses[0].item() - (1 - s1)) < 1e-12 and abs(losses[1].item() - 1.5 * (1 - s1)) < 1e-12
    assert rewards.tolist() == [2.0, 0.0]


# ORPO

def _trl_orpo(chosen_avg, rejected_avg, beta):
    from trl.experimental.orpo import ORPOTrainer

    fake_self = SimpleNamespace(beta=beta, accelerator=_Accelerator())
    return ORPOTrainer.odds_ratio_loss(fake_self, chosen_avg, rejected_avg)


def _avg_logps(B, seed, dtype):
    """Per-token average log-probs in (-6, 0), some close to 0 (both branches of log1mexp)."""
    gen = torch.Generator().manual_seed(seed)
    x = -6 * torch.rand(2, B, generator=gen, dtype=dtype) ** 2
    return x.clamp(max=-1e-4)


@pytest.mark.parametrize("B,seed", [(1, 0), (5, 1), (16, 2), (64, 3)])
def test_orpo_loss_matches_trl(B, seed):
    ac, ar = _avg_logps(B, seed, torch.float32)  # trl casts to float32, so compare there
    ours = dpo.orpo_loss(ac, ar)
    theirs, r_c, r_r, mean_ratio, mean_log_odds = _trl_orpo(ac, ar, beta=1.0)
    diff = (ours + theirs).abs().max().item()  # trl's `losses` with beta = 1 are log σ(log odds) = -ours
    assert ours.shape == (B,) and diff < 1e-6, f"ORPO vs trl: max_diff {diff}"
    theirs_01 = _trl_orpo(ac, ar, beta=0.1)[0]  # with λ = β = 0.1 trl returns -0.1·ours
    assert (0.1 * ours + theirs_01).abs().max().item() < 1e-7
    ours64 = dpo.orpo_loss(ac.double(), ar.double())  # float64 from the same inputs: trl's float32 error is tiny
    assert (ours64 + theirs.double()).abs().max().item() < 1e-6


def test_orpo_gradients_match_trl():
    ac, ar = _avg_logps(12, 9, torch.float32)
    mine = [t.clone().requires_grad_() for t in (ac, ar)]
    theirs = [t.clone().requires_grad_() for t in (ac, ar)]
    dpo.orpo_loss(*mine).mean().backward()
    (-_trl_orpo(*theirs, beta=1.0)[0]).mean().backward()
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


def test_orpo_loss_hand_worked_and_stable():
    # p_c = 0.5 (odds 1), p_r = 0.2 (odds 1/4): log odds ratio = log 4, loss = -log σ(log 4) = log(5/4)
    got = dpo.orpo_loss(torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([math.log(0.2)], dtype=torch.float64))
    assert abs(got.item() - math.log(1.25)) < 1e-14, f"max_diff {abs(got.item() - math.log(1.25))}"
    # near p = 1 and p = 0 the naive log(1 - exp(x)) loses every digit; math.log(-math.expm1(x)) does not
    c = torch.tensor([-1e-12, -60.0, -0.5], dtype=torch.float64)
    r = torch.tensor([-70.0, -1e-10, -0.5], dtype=torch.float64)
    expected = []
    for x, y in zip(c.tolist(), r.tolist()):
        log_odds = (x - math.log(-math.expm1(x))) - (y - math.log(-math.expm1(y)))
        expected.append(math.log1p(math.exp(-log_odds)) if log_odds > -30 else -log_odds)
    got = dpo.orpo_loss(c, r)
    assert torch.isfinite(got).all() and (got - torch.tensor(expected, dtype=torch.float64)).abs().max() < 1e-9, got
    # p rounded to 1 (log p = 0.0, as float32 gives for a confident model): finite loss and gradients; ~0 when only
    # the chosen reply is certain, large when only the rejected one is, log 2 when both are
    c = torch.tensor([0.0, -2.0, 0.0], requires_grad=True)
    got = dpo.orpo_loss(c, torch.tensor([-3.0, 0.0, 0.0]))
    got.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(c.grad).all(), (got, c.grad)
    assert got[0] < 1e-6 and got[1] > 15 and abs(got[2] - math.log(2)) < 1e-6, got


# SimPO

@pytest.mark.parametrize("B,beta,gamma,seed", [(1, 2.0, 1.0, 0), (6, 2.5, 0.5, 1), (16, 1.0, 1.6, 2)])
def test_simpo_loss_matches_trl_cpo(B, beta, gamma, seed):
    from trl.experimental.cpo import CPOTrainer

    ac, ar = _avg_logps(B, seed, torch.float64)
    fake_self = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta, label_smoothing=0.0,
                                accelerator=_Accelerator())
    ac_t, ac_m = ac.clone().requires_grad_(), ac.clone().requires_grad_()
    theirs, t_c, t_r = CPOTrainer.cpo_loss(fake_self, ac_t, ar)
    ours, r_c, r_r = dpo.simpo_loss(ac_m, ar, beta, gamma)
    diff = max((ours - theirs).abs().max().item(), (r_c - t_c).abs().max().item(), (r_r - t_r).abs().max().item())
    assert diff < 1e-12, f"SimPO vs trl CPO simpo: max_diff {diff}"
    ours.mean().backward()
    theirs.mean().backward()
    assert (ac_m.grad - ac_t.grad).abs().max().item() < 1e-12


# ---- sequence log-probs vs a float64 gather ------------------------------------------------------------

def _tiny_model(seed=0, vocab=50):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      pad_token_id=0, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_logprobs_matches_float64_gather(padding_side, seed):
    model = _tiny_model(seed)
    ref = _tiny_model(seed).double()
    gen = torch.Generator().manual_seed(10 + seed)
    examples = []
    for _ in range(3):
        n_prompt, n_a, n_b = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((2, 9), (1, 6), (1, 6)))
        ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
        examples.append({"prompt_ids": ids(n_prompt), "chosen_ids": ids(n_a), "rejected_ids": ids(n_b)})
    batch = dpo.collate_pairs(examples, pad_token_id=0, padding_side=padding_side)
    got = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    got_avg = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], average=True)
    expected, expected_avg = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for e in examples:  # each sequence alone, unpadded, in float64
            seq = torch.tensor([e["prompt_ids"] + e[key]])
            with torch.no_grad():
                logp = torch.log_softmax(ref(seq).logits[0, :-1], dim=-1)  # (T-1, V)
            tok = logp.gather(-1, seq[0, 1:, None]).squeeze(-1)[len(e["prompt_ids"]) - 1:]
            expected.append(tok.sum())
            expected_avg.append(tok.mean())
    expected, expected_avg = torch.stack(expected), torch.stack(expected_avg)
    diff = (got.double() - expected).abs().max().item()
    assert got.shape == (6,) and diff < 1e-4, f"max_diff {diff}"
    diff = (got_avg.double() - expected_avg).abs().max().item()
    assert diff < 1e-4, f"average: max_diff {diff}"


def test_sft_weight_adds_the_mean_nll_of_the_chosen_tokens():
    model, ref = _tiny_model(3), _tiny_model(4)
    ref64 = _tiny_model(3).double()
    gen = torch.Generator().manual_seed(7)
    examples = [{"prompt_ids": torch.randint(1, 50, (4,), generator=gen).tolist(),
                 "chosen_ids": torch.randint(1, 50, (n,), generator=gen).tolist(),
                 "rejected_ids": torch.randint(1, 50, (3,), generator=gen).tolist()} for n in (2, 5)]
    batch = dpo.collate_pairs(examples, pad_token_id=0)
    plain = dpo.make_loss_fn(dpo.PreferenceConfig("dpo"), ref)(model, batch)[0]
    with_sft = dpo.make_loss_fn(dpo.PreferenceConfig("dpo", sft_weight=0.5), ref)(model, batch)[0]
    nll = []  # every chosen token's -log p, float64, each sequence alone
    for e in examples:
        seq = torch.tensor([e["prompt_ids"] + e["chosen_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(ref64(seq).logits[0, :-1], dim=-1)
        nll += (-logp.gather(-1, seq[0, 1:, None]).squeeze(-1)[len(e["prompt_ids"]) - 1:]).tolist()
    expected = 0.5 * sum(nll) / len(nll)  # mean over the 7 chosen tokens of the batch
    assert abs((with_sft - plain).item() - expected) < 1e-4, ((with_sft - plain).item(), expected)


def test_token_logprobs_matches_naive():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 7, 11, generator=gen) * 5
    ids = torch.randint(0, 11, (3, 7), generator=gen)
    naive = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    diff = (dpo.token_logprobs(logits, ids).double() - naive).abs().max().item()
    assert diff < 1e-5, f"max_diff {diff}"


def test_token_kl_matches_float64():
    gen = torch.Generator().manual_seed(6)
    p, q = torch.randn(2, 4, 9, generator=gen), torch.randn(2, 4, 9, generator=gen)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    expected = torch.nn.functional.kl_div(torch.log_softmax(q.double(), -1), torch.log_softmax(p.double(), -1),
                                          log_target=True, reduction="none").sum(-1)[mask].mean()
    diff = abs(dpo.token_kl(p, q, mask).item() - expected.item())
    assert diff < 1e-6, f"max_diff {diff}"


# ---- data, tokenization, training -----------------------------------------------------------------------

def test_preference_pairs_are_deterministic_checkable_and_held_out():
    a = dpo.make_preference_pairs(60, "train", seed=3)
    assert a == dpo.make_preference_pairs(60, "train", seed=3)
    assert a != dpo.make_preference_pairs(60, "train", seed=4)
    test_prompts = {p.prompt for p in dpo.make_preference_pairs(60, "test", seed=3)}
    assert not test_prompts & {p.prompt for p in a}
    for p, task in zip(a, make_tasks(60, "train", seed=3)):
        assert p.prompt == task.prompt and p.chosen == task.reply, (p, task)
        assert check_answer(task, p.chosen) and not check_answer(task, p.rejected), p
    assert {p.family for p in a} == set(dpo.CORRUPTIONS)


def test_tokenize_and_collate_with_course_tokenizer():
    from transformers import AutoTokenizer
    from course_utils.models import COURSE_TINY_DIR

    tok = AutoTokenizer.from_pretrained(COURSE_TINY_DIR)
    pairs = dpo.make_preference_pairs(4, "train", seed=0)
    ex = dpo.tokenize_pairs(tok, pairs)
    ex_trl = dpo.tokenize_pairs(tok, pairs, trl_style=True)
    for p, e, e_trl in zip(pairs, ex, ex_trl):
        full = tok.apply_chat_template([{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.chosen}],
                                       tokenize=False)
        assert tok.decode(e_trl["prompt_ids"] + e_trl["chosen_ids"]) == full
        assert tok.decode(e["chosen_ids"]) == p.chosen + "<|im_end|>"
        assert tok.decode(e["rejected_ids"]) == p.rejected + "<|im_end|>"
    for side in ("left", "right"):
        b = dpo.collate_pairs(ex, tok.pad_token_id, padding_side=side)
        assert b["input_ids"].shape[0] == 8
        lens = [len(e["chosen_ids"]) for e in ex] + [len(e["rejected_ids"]) for e in ex]
        assert b["loss_mask"].sum(1).tolist() == lens
        assert torch.equal(b["attention_mask"].sum(1), torch.tensor([len(e["prompt_ids"]) + n for e, n in zip(ex + ex, lens)]))


@pytest.mark.parametrize("method", list(dpo.PREFERENCE_METHODS))
def test_training_steps_raise_preference_on_a_fixed_batch(method):
    model = _tiny_model(3)
    ref = dpo.frozen_copy(model)
    gen = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
    batch = dpo.collate_pairs([{"prompt_ids": ids(4), "chosen_ids": ids(3), "rejected_ids": ids(3)} for _ in range(4)], 0)
    cfg = dpo.PreferenceConfig(method=method, beta=2.0 if method == "simpo" else 0.5, gamma=0.5, label_smoothing=0.1)
    loss_fn = dpo.make_loss_fn(cfg, ref if dpo.needs_reference(method) else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first, _ = loss_fn(model, batch)
    for _ in range(15):
        loss, metrics = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() - 0.1, (first.item(), loss.item())
    assert metrics["acc"] == 1.0 and metrics["margin"] > 0
    assert all(p.grad is None for p in ref.parameters())


def _wiring_batch(seed=8):
    gen = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
    return dpo.collate_pairs([{"prompt_ids": ids(3 + i % 2), "chosen_ids": ids(1 + i), "rejected_ids": ids(4 - i)}
                              for i in range(4)], 0)


@pytest.mark.parametrize("method", list(dpo.PREFERENCE_METHODS))
def test_each_method_feeds_its_loss_the_right_log_probs(method):
    """make_loss_fn's value = the pure loss on sequence_logprobs (sums, or per-token averages where the method says)."""
    model, ref = _tiny_model(6), _tiny_model(7)
    batch = _wiring_batch()
    cfg = dpo.PreferenceConfig(method, beta=0.3, gamma=0.4, label_smoothing=0.2, desirable_weight=0.8,
                               undesirable_weight=1.3)
    loss, metrics = dpo.make_loss_fn(cfg, ref if dpo.needs_reference(method) else None)(model, batch)
    args = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    with torch.no_grad():
        pc, pr = dpo.sequence_logprobs(model, *args).chunk(2)
        rc, rr = dpo.sequence_logprobs(ref, *args).chunk(2)
        ac, ar = dpo.sequence_logprobs(model, *args, average=True).chunk(2)
        rac, rar = dpo.sequence_logprobs(ref, *args, average=True).chunk(2)
    if method == "dpo":
        expected, r_c, r_r = dpo.dpo_loss(pc, pr, rc, rr, 0.3, label_smoothing=0.2)
    elif method == "robust":
        expected, r_c, r_r = dpo.robust_dpo_loss(pc, pr, rc, rr, 0.3, 0.2)
    elif method == "hinge":
        expected, r_c, r_r = dpo.hinge_loss(pc, pr, rc, rr, 0.3)
    elif method == "ipo":
        expected, r_c, r_r = dpo.ipo_loss(ac, ar, rac, rar, 0.3), ac - rac, ar - rar
    elif method == "simpo":
        expected, r_c, r_r = dpo.simpo_loss(ac, ar, 0.3, 0.4)
    elif method == "kto":
        z = (torch.cat([pc, pr]) - torch.cat([rc, rr])).mean().clamp(min=0)
        expected, rewards = dpo.kto_loss(torch.cat([pc, pr]), torch.cat([rc, rr]), torch.arange(8) < 4, z, 0.3, 0.8, 1.3)
        r_c, r_r = rewards.chunk(2)
        assert abs(metrics["z"] - z.item()) < 1e-5
    else:  # orpo: chosen-token NLL + β · odds-ratio loss
        n_chosen = batch["loss_mask"][:4].sum()
        expected = -pc.sum() / n_chosen + 0.3 * dpo.orpo_loss(ac, ar)
        r_c, r_r = 0.3 * ac, 0.3 * ar
    diff = abs(loss.item() - expected.mean().item())
    assert diff < 1e-5, f"{method}: loss vs the pure function: max_diff {diff}"
    assert abs(metrics["margin"] - (r_c - r_r).mean().item()) < 1e-5 and metrics["acc"] == (r_c > r_r).float().mean().item()
    assert abs(metrics["logp_chosen"] - pc.mean().item()) < 1e-4 and ("kl" in metrics) == dpo.needs_reference(method)


def test_sft_weight_works_for_each_method_but_orpo():
    model, ref = _tiny_model(6), _tiny_model(7)
    batch = _wiring_batch()
    with torch.no_grad():
        logps = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    nll = -logps[:4].sum() / batch["loss_mask"][:4].sum()
    for method in ("ipo", "kto", "simpo"):
        plain = dpo.make_loss_fn(dpo.PreferenceConfig(method), ref)(model, batch)[0]
        with_sft = dpo.make_loss_fn(dpo.PreferenceConfig(method, sft_weight=0.5), ref)(model, batch)[0]
        assert abs((with_sft - plain).item() - 0.5 * nll.item()) < 1e-5, method
    with pytest.raises(ValueError, match=r"cfg.sft_weight must be 0 for method 'orpo'.*got 0.5"):
        dpo.make_loss_fn(dpo.PreferenceConfig("orpo", sft_weight=0.5))


def test_needs_reference():
    assert dpo.NEEDS_REFERENCE == {"dpo", "robust", "ipo", "hinge", "kto"}
    assert [m for m in dpo.PREFERENCE_METHODS if not dpo.needs_reference(m)] == ["simpo", "orpo"]
    for method in dpo.NEEDS_REFERENCE:
        with pytest.raises(ValueError, match=rf"method '{method}' needs ref_model .*reference-free method \(simpo, orpo\)"):
            dpo.make_loss_fn(dpo.PreferenceConfig(method))
    with pytest.raises(ValueError, match=r"method must be one of \[.*'orpo'\], got 'ppo'"):
        dpo.needs_reference("ppo")


# ---- bad inputs ---------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got 0"):
        dpo.dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got -0.1"):
        dpo.simpo_loss(x, x, beta=-0.1, gamma=0.5)
    with pytest.raises(ValueError, match=r"batch sizes must match.*ref_rejected_logps': \(2,\)"):
        dpo.dpo_loss(x, x, x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"policy_chosen_logps must be a 1-D tensor"):
        dpo.dpo_loss(torch.zeros(3, 2), x, x, x)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\), got 0.5"):
        dpo.dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0, got -1"):
        dpo.simpo_loss(x, x, beta=2.0, gamma=-1)
    model = _tiny_model()
    batch = dpo.collate_pairs([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}], 0)
    empty = batch["loss_mask"].clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"loss_mask marks no completion token .* rows \[1\]"):
        dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], empty)
    with pytest.raises(ValueError, match=r"same shape"):
        dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"][:, :-1], batch["loss_mask"])
    with pytest.raises(ValueError, match=r"pair.rejected is empty"):
        from transformers import AutoTokenizer
        from course_utils.models import COURSE_TINY_DIR
        dpo.tokenize_pair(AutoTokenizer.from_pretrained(COURSE_TINY_DIR), dpo.PreferencePair("What is 1 + 1?", "2", "", "addition"))
    with pytest.raises(ValueError, match=r"padding_side must be 'left' or 'right', got 'middle'"):
        dpo.collate_pairs([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}], 0, padding_side="middle")
    with pytest.raises(ValueError, match=r"method 'dpo' needs ref_model"):
        dpo.make_loss_fn(dpo.PreferenceConfig("dpo"))
    with pytest.raises(ValueError, match=r"cfg.method must be one of \['dpo', 'robust', 'ipo', 'hinge', 'kto', 'simpo', "
                                         r"'orpo'\], got 'ppo'"):
        dpo.make_loss_fn(dpo.PreferenceConfig("ppo"))
    with pytest.raises(ValueError, match=r"cfg.sft_weight must be a number >= 0, got -1"):
        dpo.make_loss_fn(dpo.PreferenceConfig("dpo", sft_weight=-1), _tiny_model())
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test'"):
        dpo.make_preference_pairs(3, "dev")


def test_family_bad_inputs_raise_clear_errors():
    x, b = torch.zeros(3), torch.tensor([True, False, True])
    for fn in (dpo.ipo_loss, dpo.hinge_loss, dpo.robust_dpo_loss):
        with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got 0"):
            fn(x, x, x, x, beta=0)
        with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got -1"):
            fn(x, x, x, x, beta=-1)
        with pytest.raises(ValueError, match=r"batch sizes must match.*ref_chosen_logps': \(2,\)"):
            fn(x, x, torch.zeros(2), x)
        with pytest.raises(ValueError, match=r"policy_rejected_logps must be a 1-D tensor \(B,\), got torch.Size\(\[3, 1\]\)"):
            fn(x, torch.zeros(3, 1), x, x)
    for eps in (0.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=rf"label_smoothing must be in \[0, 0.5\), got {eps}"):
            dpo.robust_dpo_loss(x, x, x, x, 0.1, eps)
    with pytest.raises(ValueError, match=r"desirable must be a bool tensor of shape \(3,\).*got torch.int64 \(3,\)"):
        dpo.kto_loss(x, x, torch.tensor([1, 0, 1]), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"desirable must be a bool tensor of shape \(3,\).*got torch.bool \(2,\)"):
        dpo.kto_loss(x, x, torch.tensor([True, False]), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"desirable must be a bool tensor.*got list"):
        dpo.kto_loss(x, x, [True, False, True], torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"kl must be a finite number >= 0, got -0.5"):
        dpo.kto_loss(x, x, b, torch.tensor(-0.5))
    with pytest.raises(ValueError, match=r"kl must be a scalar .*got shape \(3,\)"):
        dpo.kto_loss(x, x, b, torch.zeros(3))
    with pytest.raises(ValueError, match=r"batch sizes must match.*'ref_logps': \(2,\)"):
        dpo.kto_loss(x, torch.zeros(2), b, 0.0)
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got 0"):
        dpo.kto_loss(x, x, b, 0.0, beta=0)
    with pytest.raises(ValueError, match=r"undesirable_weight must be a finite number >= 0, got -1"):
        dpo.kto_loss(x, x, b, 0.0, undesirable_weight=-1)
    neg = -torch.ones(3)
    with pytest.raises(ValueError, match=r"rejected_avg_logps must be log-probabilities <= 0, got 0.5 at index 1"):
        dpo.orpo_loss(neg, torch.tensor([-1.0, 0.5, -2.0]))
    with pytest.raises(ValueError, match=r"chosen_avg_logps must be log-probabilities <= 0, got nan at index 0"):
        dpo.orpo_loss(torch.tensor([float("nan"), -1.0, -1.0]), neg)
    with pytest.raises(ValueError, match=r"batch sizes must match"):
        dpo.orpo_loss(neg, -torch.ones(4))
    with pytest.raises(ValueError, match=r"cfg.label_smoothing must be in \[0, 0.5\), got 0.5"):
        dpo.make_loss_fn(dpo.PreferenceConfig("robust", label_smoothing=0.5), _tiny_model())
    with pytest.raises(ValueError, match=r"cfg.desirable_weight must be a finite number >= 0, got -1"):
        dpo.make_loss_fn(dpo.PreferenceConfig("kto", desirable_weight=-1), _tiny_model())


def test_style_pairs_and_parse_reply():
    pairs = dpo.make_preference_pairs(40, "train", seed=2, template="Answer: {}", style_fraction=0.5)
    sources = {p.source for p in pairs}
    assert sources == {"style", "wrong"}, sources
    for p in pairs:
        ok, ans = dpo.parse_reply(p.chosen, "Answer: {}")
        assert ok and p.chosen == f"Answer: {ans}"
        ok_r, ans_r = dpo.parse_reply(p.rejected, "Answer: {}")
        assert (p.source == "style") == (not ok_r) and (p.source != "style" or ans_r == ans)
    assert dpo.parse_reply("  42 ", "{}") == (True, "42")
    assert dpo.parse_reply("Answer:", "Answer: {}") == (False, "Answer:")
    with pytest.raises(ValueError, match=r"template must be a string with exactly one '\{\}'"):
        dpo.make_preference_pairs(3, template="Answer")
    with pytest.raises(ValueError, match=r"style_fraction must be in \[0, 1\], got 2"):
        dpo.make_preference_pairs(3, style_fraction=2)


# ---- online DPO: pairs sampled from the policy ------------------------------------------------------------

def _sft_model():
    from course_utils import load_model
    from course_utils.models import REPO_ROOT

    return load_model(str(REPO_ROOT / "data" / "course-tiny-sft"), device="cpu")


def test_sampled_pairs_put_one_of_the_models_right_samples_over_a_wrong_one():
    from course_utils.grpo import sample_completions

    model, tok = _sft_model()
    tasks = make_tasks(16, "train", seed=7, families=["addition"])
    pairs = dpo.sampled_pairs(model, tok, tasks, 4, generator=torch.Generator().manual_seed(0))
    assert pairs, "the SFT model samples both right and wrong sums on some of 16 addition prompts"
    rollout = sample_completions(model, tok, [t.prompt for t in tasks], 4, 40, generator=torch.Generator().manual_seed(0))
    groups = {t.prompt: (t, [s.strip() for s in rollout.texts[4 * i:4 * i + 4]]) for i, t in enumerate(tasks)}
    for p in pairs:
        task, samples = groups[p.prompt]
        assert p.source == "sampled" and p.chosen in samples and p.rejected in samples, (p, samples)
        assert task.answer == p.chosen.split(" so ")[-1] and task.answer != p.rejected.split(" so ")[-1], p
    n_mixed = sum(any(check_answer(t, s) for s in ss) and not all(check_answer(t, s) for s in ss) for t, ss in groups.values())
    assert len(pairs) == n_mixed


def test_online_batches_are_fresh_per_step_and_reproducible():
    model, tok = _sft_model()
    tasks = make_tasks(500, "train", seed=0, families=["addition"])
    batch_fn = dpo.make_online_pair_batch_fn(model, tok, tasks, 4, seed=1)
    b0, b1 = batch_fn(0), batch_fn(1)
    assert b0["input_ids"].shape[0] == 8 and b0["loss_mask"].any(1).all()
    assert torch.equal(batch_fn(0)["input_ids"], b0["input_ids"])  # same step, same weights: same batch (resume)
    assert tok.batch_decode(b0["input_ids"]) != tok.batch_decode(b1["input_ids"])
    never = [Task("addition", t.prompt, "never", t.work) for t in tasks[:8]]  # no sample can be right
    assert dpo.sampled_pairs(model, tok, never, 2) == []
    with pytest.raises(RuntimeError, match=r"only 0 of 4 pairs after 2 draws"):
        dpo.make_online_pair_batch_fn(model, tok, never, 4, max_draws=2)(0)
    with pytest.raises(ValueError, match=r"group_size must be an int >= 2 \(a pair needs two samples\), got 1"):
        dpo.sampled_pairs(model, tok, tasks[:2], 1)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int, got 0"):
        dpo.make_online_pair_batch_fn(model, tok, tasks, 0)


# ---- per-pair / per-task values behind the reported means ----------------------------------------------------

def test_evaluate_pairs_per_pair_values_match_sequence_logprobs():
    model, ref = _tiny_model(4), _tiny_model(5)
    gen = torch.Generator().manual_seed(4)
    ids = lambda n: torch.randint(1, 50, (n,), generator=gen).tolist()  # noqa: E731
    examples = [{"prompt_ids": ids(3 + i % 2), "chosen_ids": ids(2 + i % 3), "rejected_ids": ids(3)} for i in range(7)]
    out = dpo.evaluate_pairs(model, examples, 0, ref_model=ref, beta=0.3, batch_size=3, per_pair=True)
    b = dpo.collate_pairs(examples, 0)
    with torch.no_grad():
        pc, pr = dpo.sequence_logprobs(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).chunk(2)
        rc, rr = dpo.sequence_logprobs(ref, b["input_ids"], b["attention_mask"], b["loss_mask"]).chunk(2)
        ac, ar = dpo.sequence_logprobs(model, b["input_ids"], b["attention_mask"], b["loss_mask"], average=True).chunk(2)
    margin = 0.3 * ((pc - rc) - (pr - rr))
    torch.testing.assert_close(torch.tensor(out["logp_chosen_each"]), pc, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["logp_rejected_each"]), pr, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["margin_each"]), margin, atol=1e-5, rtol=0)
    assert out["avg_correct"] == (ac > ar).int().tolist() and out["dpo_correct"] == (margin > 0).int().tolist()
    assert abs(out["dpo_acc"] - sum(out["dpo_correct"]) / 7) < 1e-6 and abs(out["avg_acc"] - sum(out["avg_correct"]) / 7) < 1e-6
    assert "dpo_correct" not in dpo.evaluate_pairs(model, examples, 0, per_pair=True)
    assert "avg_correct" not in dpo.evaluate_pairs(model, examples, 0)


def test_accuracy_table_hand_worked():
    tasks = [Task("count", "p1", "1"), Task("count", "p2", "1"), Task("count", "p3", "2"), Task("count", "p4", "0"),
             Task("addition", "q1", "5", "2+3"), Task("addition", "q2", "7", "3+4")]
    table = dpo.accuracy_table({"A": {"correct": [1, 1, 0, 0, 1, 0]}, "B": {"correct": [1, 1, 1, 1, 0, 0]}}, tasks)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert list(rows) == ["addition", "count", "all"]
    # family, n, majority rate (count: "1" is 2 of 4; addition: each answer once; all: (2 + 1) / 6), A, [CI], B, [CI]
    assert rows["count"][:4] == ["count", "4", "0.500", "0.500"] and rows["count"][6] == "1.000"
    assert rows["addition"][:4] == ["addition", "2", "0.500", "0.500"] and rows["addition"][6] == "0.000"
    assert rows["all"][:4] == ["all", "6", "0.500", "0.500"] and rows["all"][6] == "0.667"
    from course_utils.stats import binomial_ci
    low, high = binomial_ci(4, 6)
    assert " ".join(rows["all"][7:9]) == f"[{low:.2f}, {high:.2f}]"
    with pytest.raises(ValueError, match=r"results\['A'\] must be an evaluate_replies output on these 6 tasks"):
        dpo.accuracy_table({"A": {"correct": [1]}}, tasks)
    with pytest.raises(ValueError, match="results must be a non-empty dict"):
        dpo.accuracy_table({}, tasks)
    with pytest.raises(ValueError, match="tasks must be a non-empty list"):
        dpo.accuracy_table({"A": {"correct": []}}, [])
