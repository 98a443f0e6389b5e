"""Parity and bad-input tests for course_utils.reward_model and course_utils.ppo (lab 10).

References: trl 1.16's RewardTrainer.compute_loss and RLOOTrainer (its own advantage and loss code, run on a real
trainer), independent float64 loops written from the papers' formulas (GAE, the clipped policy and value losses),
hand-worked values, and brute-force enumeration of n-subsets for the best-of-n estimator.
"""

import copy
import math
import warnings
from itertools import combinations

import pytest
import torch

from course_utils import ppo, reward_model as rm_lib
from course_utils.data import Task, make_tasks
from course_utils.dpo.pairs import PreferencePair, collate_pairs, tokenize_pairs


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def _random_mask(N, C, gen):
    lengths = torch.randint(1, C + 1, (N,), generator=gen)
    return (torch.arange(C)[None] < lengths[:, None]).float()  # (N, C) right padding


# ---- reward model ----------------------------------------------------------------------------------

def test_bradley_terry_hand_worked_and_margin():
    loss = rm_lib.bradley_terry_loss(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0]))
    expected = [math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(3))]
    assert _max_diff(loss, torch.tensor(expected)) < 1e-6, loss
    with_margin = rm_lib.bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([1.0]))
    assert abs(with_margin.item() - math.log(2)) < 1e-6


@pytest.fixture(scope="module")
def tiny_rm():
    model, tok = rm_lib.load_reward_model("course-tiny", seed=0)
    return model, tok


def test_reward_scores_read_the_head_at_the_last_real_token(tiny_rm):
    """The reward equals the scalar head applied by hand to the last non-pad hidden state, with either padding."""
    model, tok = tiny_rm
    pairs = [PreferencePair("What is 1 + 2?", "1+2=3 so 3", "so 4", "addition"),
             PreferencePair("Reverse cat", "tac", "cat act", "reverse")]
    for side in ("right", "left"):
        batch = collate_pairs(tokenize_pairs(tok, pairs), tok.pad_token_id, padding_side=side)
        with torch.no_grad():
            r = rm_lib.reward_scores(model, batch["input_ids"], batch["attention_mask"])
            for i in range(len(r)):
                real = batch["attention_mask"][i].bool()
                ids = batch["input_ids"][i][real][None]  # the row alone, no padding
                h = model.model(input_ids=ids).last_hidden_state[0, -1]
                assert abs(r[i].item() - model.score(h).item()) < 1e-4, (side, i)


def test_bradley_terry_equals_trl_reward_trainer_loss(tiny_rm, tmp_path):
    """trl's RewardTrainer.compute_loss on a batch from its own collator = our mean loss on the same rows."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, tok = tiny_rm
    tasks = make_tasks(6, "train", seed=3, families=["addition"])
    pairs = [PreferencePair(t.prompt, t.reply, t.reply[:-1] + "7", t.family) for t in tasks]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p.prompt}],
                             "chosen": [{"role": "assistant", "content": p.chosen}],
                             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])
    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, max_steps=1, report_to="none",
                        disable_tqdm=True, use_cpu=True, save_strategy="no", bf16=False, center_rewards_coefficient=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RewardTrainer(model=copy.deepcopy(model), args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, dict(batch))
        r = rm_lib.reward_scores(trainer.model, batch["input_ids"], batch["attention_mask"])
    chosen, rejected = r.chunk(2)
    ours = rm_lib.bradley_terry_loss(chosen, rejected).mean()
    assert abs(ours.item() - theirs.item()) < 1e-6, (ours, theirs)
    assert (chosen != rejected).all()  # the rows differ: the check is not 0 = 0


def test_train_reward_model_learns_a_clean_preference(tiny_rm):
    """Held-out pairs (right reply over a reply with a wrong final number): accuracy far above chance."""
    model, tok = tiny_rm
    model = copy.deepcopy(model)

    def pairs(n, split, seed):
        return [PreferencePair(t.prompt, t.reply, t.reply + " 0", t.family) for t in make_tasks(n, split, seed=seed,
                                                                                                 families=["reverse"])]
    rm_lib.train_reward_model(model, tok, pairs(64, "train", 0), rm_lib.RewardConfig(epochs=3, lr=3e-4))
    margins = rm_lib.pair_margins(model, tok, pairs(40, "test", 1))
    assert (margins > 0).float().mean() > 0.9, margins


def test_label_noise_flips_the_asked_fraction():
    pairs = [PreferencePair(f"p{i}", "a", "b", "addition") for i in range(4000)]
    noisy = rm_lib.with_label_noise(pairs, 0.2, seed=1)
    flipped = sum(p.chosen == "b" for p in noisy) / len(pairs)
    assert abs(flipped - 0.2) < 3 * math.sqrt(0.2 * 0.8 / len(pairs)), flipped
    assert rm_lib.with_label_noise(pairs[:10], 0.0) == pairs[:10]


def test_calibration_bins_hand_worked():
    m = torch.tensor([0.1, -0.2, 3.0, 4.0])
    rows = rm_lib.calibration(m, 2)
    assert [r["n"] for r in rows] == [2, 2]
    assert rows[0]["accuracy"] == 0.5 and rows[1]["accuracy"] == 1.0
    assert abs(rows[1]["confidence"] - (torch.sigmoid(torch.tensor(3.0)) + torch.sigmoid(torch.tensor(4.0))).item() / 2) < 1e-6


def test_best_of_n_equals_enumeration_of_subsets():
    gen = torch.Generator().manual_seed(0)
    proxy = torch.randn(3, 7, generator=gen)
    true = (torch.rand(3, 7, generator=gen) > 0.5).float()
    rows = rm_lib.best_of_n_curve(proxy, true, [1, 2, 4, 7])
    for row in rows:
        n = row["n"]
        per_prompt = []
        for p in range(3):
            subsets = list(combinations(range(7), n))
            per_prompt.append(sum(true[p, max(s, key=lambda i: proxy[p, i].item())].item() for s in subsets) / len(subsets))
        assert abs(row["true"] - sum(per_prompt) / 3) < 1e-9, (n, row["true"], per_prompt)
        assert abs(row["kl"] - (math.log(n) - (n - 1) / n)) < 1e-9
    assert abs(rows[0]["true"] - true.double().mean().item()) < 1e-12  # best of 1 = a random sample
    assert abs(rows[0]["true_gain"]) < 1e-12 and abs(rows[0]["proxy_gain"]) < 1e-12
    assert abs(rows[-1]["proxy_gain"] - (proxy.max(1).values - proxy.mean(1)).double().mean().item()) < 1e-6


# ---- PPO pieces vs float64 loops ------------------------------------------------------------------

def _gae_reference(rewards, values, mask, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over the real tokens of each row, in float64 Python, V after the last real token = 0."""
    N, C = rewards.shape
    adv = torch.zeros(N, C, dtype=torch.float64)
    for i in range(N):
        T = int(mask[i].sum())
        v = [float(values[i, t]) for t in range(T)] + [0.0]
        deltas = [float(rewards[i, t]) + gamma * v[t + 1] - v[t] for t in range(T)]
        for t in range(T):
            adv[i, t] = sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t))
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0)])
def test_gae_equals_the_sum_formula(gamma, lam):
    gen = torch.Generator().manual_seed(1)
    N, C = 5, 9
    mask = _random_mask(N, C, gen)
    rewards, values = torch.randn(N, C, generator=gen) * mask, torch.randn(N, C, generator=gen) * mask
    adv, ret = ppo.gae(rewards, values, gamma, lam)
    ref = _gae_reference(rewards, values, mask, gamma, lam)
    assert _max_diff(adv * mask, ref) < 1e-5, f"max_diff {_max_diff(adv * mask, ref):.3g}"
    assert _max_diff(ret * mask, (ref + values.double()) * mask) < 1e-5


def test_gae_with_lambda_one_and_no_discount_is_return_minus_value():
    """γ = λ = 1: the advantage is the sum of the rewards still to come minus the value (Monte Carlo)."""
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.2, 0.5, 0.9]])
    adv, ret = ppo.gae(r, v, 1.0, 1.0)
    assert _max_diff(adv, torch.tensor([[0.8, 0.5, 0.1]])) < 1e-6 and _max_diff(ret, torch.ones(1, 3)) < 1e-6


def test_kl_penalized_rewards_put_the_score_on_the_last_real_token():
    gen = torch.Generator().manual_seed(2)
    N, C = 4, 6
    mask = _random_mask(N, C, gen)
    lp, ref = torch.randn(N, C, generator=gen), torch.randn(N, C, generator=gen)
    scores = torch.randn(N, generator=gen)
    r = ppo.kl_penalized_rewards(scores, lp, ref, mask, 0.1)
    for i in range(N):
        T = int(mask[i].sum())
        expected = [-0.1 * (lp[i, t] - ref[i, t]).item() for t in range(T)]
        expected[-1] += scores[i].item()
        assert _max_diff(r[i, :T], torch.tensor(expected)) < 1e-6
        assert (r[i, T:] == 0).all()


def test_policy_and_value_losses_equal_float64_loops():
    gen = torch.Generator().manual_seed(3)
    N, C, eps, cv = 6, 7, 0.2, 0.2
    mask = _random_mask(N, C, gen)
    lp = torch.randn(N, C, generator=gen, dtype=torch.float64).requires_grad_()
    old = lp.detach() + 0.3 * torch.randn(N, C, generator=gen, dtype=torch.float64)  # ratios beyond the clip
    adv = torch.randn(N, C, generator=gen, dtype=torch.float64)
    loss = ppo.policy_loss(lp, old, adv, mask.double(), eps)
    terms = []
    for i in range(N):
        for t in range(int(mask[i].sum())):
            rho = math.exp(lp[i, t].item() - old[i, t].item())
            a = adv[i, t].item()
            terms.append(max(-a * rho, -a * min(max(rho, 1 - eps), 1 + eps)))
    assert abs(loss.item() - sum(terms) / len(terms)) < 1e-12
    v = torch.randn(N, C, generator=gen, dtype=torch.float64)
    old_v = v + 0.5 * torch.randn(N, C, generator=gen, dtype=torch.float64)
    ret = torch.randn(N, C, generator=gen, dtype=torch.float64)
    terms = []
    for i in range(N):
        for t in range(int(mask[i].sum())):
            vc = old_v[i, t].item() + min(max(v[i, t].item() - old_v[i, t].item(), -cv), cv)
            terms.append(0.5 * max((v[i, t].item() - ret[i, t].item()) ** 2, (vc - ret[i, t].item()) ** 2))
    assert abs(ppo.value_loss(v, old_v, ret, mask.double(), cv).item() - sum(terms) / len(terms)) < 1e-12


def test_whiten_gives_zero_mean_unit_variance_on_real_tokens():
    gen = torch.Generator().manual_seed(4)
    mask = _random_mask(8, 10, gen)
    x = 3 + 2 * torch.randn(8, 10, generator=gen, dtype=torch.float64)
    w = ppo.whiten(x, mask.double())
    real = w[mask.bool()]
    assert abs(real.mean().item()) < 1e-9 and abs(real.std().item() - 1) < 1e-6 and (w[~mask.bool()] == 0).all()


@pytest.mark.parametrize("G", [2, 4, 5])
def test_rloo_advantage_is_reward_minus_mean_of_the_others(G):
    gen = torch.Generator().manual_seed(G)
    r = torch.randn(3 * G, generator=gen, dtype=torch.float64)
    adv = ppo.rloo_advantages(r, G)
    for i in range(3 * G):
        g = i // G
        others = [r[j].item() for j in range(g * G, g * G + G) if j != i]
        assert abs(adv[i].item() - (r[i].item() - sum(others) / len(others))) < 1e-12
    grouped = r.view(3, G)
    assert _max_diff(adv.view(3, G), G / (G - 1) * (grouped - grouped.mean(1, keepdim=True))) < 1e-12


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="group_size"):
        ppo.rloo_advantages(torch.randn(6), 1)
    with pytest.raises(ValueError, match="multiple of group_size"):
        ppo.rloo_advantages(torch.randn(5), 2)
    with pytest.raises(ValueError, match="lam"):
        ppo.gae(torch.zeros(1, 2), torch.zeros(1, 2), 1.0, 1.5)
    with pytest.raises(ValueError, match="rewards, values"):
        ppo.gae(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="noise"):
        rm_lib.with_label_noise([PreferencePair("p", "a", "b", "sort")], 0.7)
    with pytest.raises(ValueError, match="chosen_rewards and rejected_rewards"):
        rm_lib.bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="cfg.group_size"):
        ppo.check_config(ppo.PPOConfig(algorithm="rloo", group_size=1))
    with pytest.raises(ValueError, match="cfg.algorithm"):
        ppo.check_config(ppo.PPOConfig(algorithm="dpo"))
    with pytest.raises(ValueError, match=r"ns\[i\]"):
        rm_lib.best_of_n_curve(torch.zeros(2, 3), torch.zeros(2, 3), [4])


# ---- RLOO vs trl's RLOOTrainer, on a batch it generated ----------------------------------------------

def test_rloo_advantages_and_loss_equal_trl_rlootrainer(tiny):
    """A real RLOOTrainer (trl 1.16) samples and scores a batch; our leave-one-out advantages from the same rewards,
    our log-probs and KL give its advantages, and our rloo_loss its _compute_loss (with the clip acting)."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from course_utils.rewards import accuracy_reward, format_reward

    model, tok = tiny
    tasks = make_tasks(2, "train", seed=5, families=["addition"])
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": t.prompt}], "answer": t.answer,
                             "family": t.family} for t in tasks])
    G = 4
    args = RLOOConfig(output_dir="/tmp/course_trl_rloo_test", per_device_train_batch_size=8, num_generations=G,
                      max_completion_length=10, beta=0.05, max_steps=1, report_to="none", disable_tqdm=True,
                      use_cpu=True, save_strategy="no", bf16=False, steps_per_generation=1)
    funcs = [format_reward, accuracy_reward]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RLOOTrainer(model=copy.deepcopy(model), reward_funcs=funcs, args=args, train_dataset=ds,
                              processing_class=tok)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy off the reference: a KL term in every reward, advantages not all 0
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = ppo.trl_rloo_batch(trainer, [ds[i] for i in range(len(tasks)) for _ in range(G)], funcs)
    assert out["trl_advantages"].abs().max() > 0  # the rewards (or the KL) differ within a group: not 0 = 0
    d_adv = _max_diff(out["our_advantages"], out["trl_advantages"])
    assert d_adv < 1e-4, f"advantage max_diff {d_adv:.3g}"
    assert _max_diff(out["our_logps"], out["trl_old_logps"]) < 1e-4
    ours, theirs = out["our_loss"].item(), out["trl_loss"].item()
    assert abs(ours - theirs) < 1e-5 * max(1.0, abs(ours)), (ours, theirs)


# ---- the loop: it learns, and a resumed run equals an uninterrupted one -------------------------------------

def _tiny_setup(tiny):
    model, tok = tiny
    rm, _ = rm_lib.load_reward_model("course-tiny", seed=1)
    tasks = make_tasks(40, "train", seed=0, families=["addition"])
    return copy.deepcopy(model), tok, rm, tasks


@pytest.mark.parametrize("algorithm", ["ppo", "rloo"])
def test_resumed_run_equals_uninterrupted_run(tiny, tmp_path, algorithm):
    model, tok, rm, tasks = _tiny_setup(tiny)
    cfg = ppo.PPOConfig(algorithm=algorithm, steps=3, prompts_per_step=2, group_size=2, max_new_tokens=6,
                        eval_every=0, save_every=1, lr=1e-3)
    ref = copy.deepcopy(model)
    full = ppo.train_rlhf(copy.deepcopy(model), tok, tasks, rm, cfg, ref_model=ref, critic=copy.deepcopy(rm),
                          checkpoint_dir=tmp_path / "a")
    part = copy.deepcopy(model)
    critic = copy.deepcopy(rm)
    ppo.train_rlhf(part, tok, tasks, rm, cfg, ref_model=ref, critic=critic, checkpoint_dir=tmp_path / "b", stop_at_step=2)
    resumed = ppo.train_rlhf(copy.deepcopy(model), tok, tasks, rm, cfg, ref_model=ref, critic=copy.deepcopy(rm),
                             checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from == 2
    for key in ("proxy", "true", "kl", "policy_loss"):
        assert abs(full.history[-1][key] - resumed.history[-1][key]) < 1e-5, key
    assert full.history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first round samples from the reference
    assert full.history[-1]["kl"] != pytest.approx(0.0, abs=1e-6)  # and the policy moved (lr 1e-3)


def test_token_values_read_the_head_where_the_policy_predicts_each_token(tiny_rm):
    """Value t = score(hidden state at the position that predicts completion token t), as the log-probs align."""
    model, _ = tiny_rm
    gen = torch.Generator().manual_seed(8)
    ids = torch.randint(5, 200, (2, 9), generator=gen)
    am = torch.ones_like(ids)
    with torch.no_grad():
        v = ppo.token_values(model, ids, am, 4)  # (2, 4)
        hidden = model.model(input_ids=ids, attention_mask=am).last_hidden_state  # (2, 9, d)
        expected = torch.stack([model.score(hidden[:, 9 - 4 - 1 + t]).squeeze(-1) for t in range(4)], 1)
        last = rm_lib.reward_scores(model, ids, am)  # the reward reads the last position, after the last token
    assert _max_diff(v, expected) < 1e-5
    assert _max_diff(model.score(hidden[:, -1]).squeeze(-1), last) < 1e-5
