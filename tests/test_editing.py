"""Tests for course_utils.editing (lecture 13): the rank-one update against a float64 constrained least-squares
solve written independently in numpy (its KKT system), causal tracing's limits (no noise, everything restored),
keys against the MLP's own formula, and edits that undo exactly."""

import numpy as np
import pytest
import torch

from course_utils import editing

PROMPT, SUBJECT = "The word cat is spelled", " cat"


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _constrained_lstsq(W, K, k, v):
    """argmin ‖(W' - W) K‖²_F subject to W' k = v, row by row from the KKT system
    [[2 K Kᵀ, k], [kᵀ, 0]] [δ; μ] = [0; r_i] with r = v - W k (numpy float64)."""
    W, K, k, v = (np.asarray(a, dtype=np.float64) for a in (W, K, k, v))
    m = W.shape[1]
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = 2 * K @ K.T
    kkt[:m, m] = kkt[m, :m] = k
    rhs = np.zeros((m + 1, W.shape[0]))
    rhs[m] = v - W @ k
    return W + np.linalg.solve(kkt, rhs)[:m].T


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("d, m, n", [(5, 8, 40), (256, 704, 2000)])
def test_rome_update_is_the_constrained_least_squares_solution(d, m, n):
    W, K, k, v = _rand(0, d, m), _rand(1, m, n), _rand(2, m), _rand(3, d)
    C = K @ K.T / n
    new = editing.rome_update(W, C, k, v)
    constraint = (new @ k - v).abs().max().item()
    expected = _constrained_lstsq(W, K, k, v)
    diff = np.abs(new.numpy() - expected).max()
    print(f"max |W'k - v| = {constraint:.2e}, max |W' - W'_kkt| = {diff:.2e}")
    assert constraint < 1e-9
    assert diff < 1e-8 * max(1.0, np.abs(expected).max())
    s = torch.linalg.svdvals(new - W)
    assert s[1] < 1e-10 * s[0], f"update not rank one: singular values {s[:3]}"
    # the update's cost is the constrained minimum: any other W' with W'k = v costs more
    other = new + torch.outer(_rand(4, d), _rand(5, m) - _rand(5, m) @ k / (k @ k) * k)  # adds Δ with Δk = 0
    assert ((other - W) @ K).norm() > ((new - W) @ K).norm()
    assert editing.rome_update(W.float(), C, k, v).dtype == torch.float32


def test_causal_trace_without_noise_is_the_clean_probability(tiny):
    model, tok = tiny
    for kind in editing.TRACE_KINDS:
        r = editing.causal_trace(model, tok, PROMPT, SUBJECT, " c", noise_std=0.0, samples=2, kind=kind)
        diff = (r.probs - r.clean_prob).abs().max().item()
        print(kind, "max_diff", diff)
        assert r.probs.shape == (4, 5) and r.subject_positions == [2] and r.tokens[2] == "Ġcat"
        assert diff < 1e-5 and abs(r.corrupted_prob - r.clean_prob) < 1e-5
    assert r.clean_prob > 0.99  # course-tiny knows how cat is spelled
    assert _no_hooks(model)


def test_restoring_every_hidden_state_gives_back_the_clean_probability(tiny):
    model, tok = tiny
    r = editing.causal_trace(model, tok, PROMPT, SUBJECT, " c", samples=4)
    assert r.corrupted_prob < 0.5 * r.clean_prob  # the default noise hides the subject
    everything = [(layer, t) for layer in range(4) for t in range(5)]
    back = editing.restored_prob(model, tok, PROMPT, SUBJECT, " c", everything, samples=4)
    print("max_diff", abs(back - r.clean_prob))
    assert abs(back - r.clean_prob) < 1e-5
    for layer in range(4):  # one layer's whole output is enough: later layers only see clean inputs
        one = editing.restored_prob(model, tok, PROMPT, SUBJECT, " c", [(layer, t) for t in range(5)], samples=4)
        assert abs(one - r.clean_prob) < 1e-5
    assert abs(r.probs[-1, -1] - r.clean_prob) < 1e-5  # the last layer at the last position sets the logits
    nothing = editing.restored_prob(model, tok, PROMPT, SUBJECT, " c", [], samples=4)
    assert abs(nothing - r.corrupted_prob) < 1e-6
    assert _no_hooks(model)


def test_mlp_keys_are_act_gate_times_up_and_do_not_depend_on_padding(tiny):
    model, tok = tiny
    texts = ["The word cat is spelled c a t.", "Once upon a time, there was a red fox named Tom."]
    keys = editing.mlp_keys(model, tok, 1, texts)
    mlp, seen = model.model.layers[1].mlp, []
    handle = mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            for t in texts:
                model(**tok(t, return_tensors="pt"))
    finally:
        handle.remove()
    with torch.no_grad():
        expected = torch.cat([(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))[0] for x in seen])
    print("max_diff", (keys - expected).abs().max().item())
    torch.testing.assert_close(keys, expected, atol=1e-4, rtol=1e-4)
    C = editing.key_second_moment(model, tok, 1, texts)
    torch.testing.assert_close(C, keys.double().T @ keys.double() / len(keys))
    longer = "Mia saw a cat. " + texts[0]
    at = editing.subject_positions(tok, longer, SUBJECT)
    assert tok.convert_ids_to_tokens(tok(longer).input_ids)[at[0]] == "Ġcat" and at[0] > 3  # the second " cat"
    k = editing.subject_key(model, tok, 1, [texts[0], longer], SUBJECT)
    torch.testing.assert_close(k, (keys[2] + editing.mlp_keys(model, tok, 1, [longer])[at[0]]) / 2,
                               atol=1e-4, rtol=1e-4)
    assert _no_hooks(model)


def test_hooks_are_removed_when_the_forward_pass_fails(tiny):
    model, tok = tiny

    def boom(module, args):
        raise RuntimeError("boom")

    handle = model.model.norm.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            editing.mlp_keys(model, tok, 0, [PROMPT])
        with pytest.raises(RuntimeError, match="boom"):
            editing.causal_trace(model, tok, PROMPT, SUBJECT, " c", samples=1)
    finally:
        handle.remove()
    assert _no_hooks(model)


def test_reading_probabilities(tiny):
    model, tok = tiny
    prompts = [PROMPT, "Once upon a time, there was a dog. The word dog is spelled"]
    probs = editing.next_token_probs(model, tok, prompts)
    with torch.no_grad():
        alone = [model(**tok(p, return_tensors="pt")).logits[0, -1].softmax(-1) for p in prompts]
    print("max_diff", (probs - torch.stack(alone)).abs().max().item())
    torch.testing.assert_close(probs, torch.stack(alone), atol=1e-5, rtol=1e-4)
    p, rank = editing.next_token_stats(model, tok, prompts, " c")
    assert rank[0] == 0 and rank[1] > 0 and p[0] > 0.99
    ids = tok(PROMPT + " c a t").input_ids
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = sum(logp[t - 1, ids[t]] for t in range(5, 8))
    assert abs(editing.target_logprob(model, tok, PROMPT, " c a t")[0] - expected) < 1e-4
    assert editing.subject_positions(tok, "A cat. The word cat is spelled", " cat") == [5]  # the last occurrence


def test_edit_fact_writes_the_fact_and_undoes_exactly(tiny):
    model, tok = tiny
    ids = tok(["Once upon a time, there was a cat named Tom. " + PROMPT], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(ids).logits.clone()
    C = editing.key_second_moment(model, tok, 0, [PROMPT + " c a t.", "Once upon a time, there was a dog."] * 20
                                  + [f"The word {w} is spelled." for w in ("dog", "hat", "cup", "fish")] * 5)
    C = C + 1e-3 * torch.eye(704, dtype=C.dtype)  # a few texts do not span all 704 dimensions
    old = editing.edit_fact(model, tok, PROMPT, SUBJECT, " k a t", layer=0, second_moment=C, through_update=True)
    try:
        p_new, _ = editing.next_token_stats(model, tok, PROMPT, " k")
        p_old, _ = editing.next_token_stats(model, tok, PROMPT, " c")
        assert p_new[0] > p_old[0], f"edit did not take: P(k) {p_new[0]:.3f}, P(c) {p_old[0]:.3f}"
        for w in editing.next_token_probs(model, tok, ["The word dog is spelled"]):
            assert w.argmax() == tok(" d").input_ids[0]
    finally:
        model.model.layers[0].mlp.down_proj.weight.data.copy_(old)
    with torch.no_grad():
        after = model(ids).logits
    print("max_diff after undo", (after - before).abs().max().item())
    assert torch.equal(after, before)
    assert all(p.grad is None for p in model.parameters()) and _no_hooks(model)


def test_finetune_fact_changes_only_its_parameters_and_undoes_exactly(tiny):
    model, tok = tiny
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = "model.layers.1.mlp.down_proj.weight"
    old = editing.finetune_fact(model, tok, PROMPT, " k a t", steps=3, lr=1e-3, params=[name])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert changed == [name] and list(old) == [name]
    model.load_state_dict(old, strict=False)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_target_value_leaves_the_weights_alone(tiny):
    model, tok = tiny
    state = {k: v.clone() for k, v in model.state_dict().items()}
    v = editing.target_value(model, tok, 0, [PROMPT, "Tom saw a dog. " + PROMPT], SUBJECT, " k a t", steps=2,
                             kl_prompts=["Once upon a time, there was a cat"], kl_weight=0.5, weight_decay=0.1)
    assert v.shape == (256,) and torch.isfinite(v).all()
    assert all(torch.equal(v_, state[k]) for k, v_ in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and _no_hooks(model)


def test_random_prefixes_are_seeded(tiny):
    model, tok = tiny
    a = editing.random_prefixes(model, tok, 3, length=6, seed=5)
    assert a == editing.random_prefixes(model, tok, 3, length=6, seed=5) and len(a) == 3
    assert all(p.endswith(" ") for p in a)


def test_bad_arguments_raise_clear_errors(tiny):
    model, tok = tiny
    C = torch.eye(704, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"subject ' dog' must occur in the prompt"):
        editing.causal_trace(model, tok, PROMPT, " dog", " c")
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 3\].*got 4"):
        editing.mlp_keys(model, tok, 4, [PROMPT])
    with pytest.raises(ValueError, match=r"layer must be .*got -1"):
        editing.edit_fact(model, tok, PROMPT, SUBJECT, " k a t", layer=-1, second_moment=C)
    with pytest.raises(TypeError, match=r"layer must be an int .*got float 1.0"):
        editing.subject_key(model, tok, 1.0, [PROMPT], SUBJECT)
    with pytest.raises(ValueError, match=r"target must be a non-empty string, got ''"):
        editing.target_value(model, tok, 0, PROMPT, SUBJECT, "")
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'resid'"):
        editing.causal_trace(model, tok, PROMPT, SUBJECT, " c", kind="resid")
    with pytest.raises(ValueError, match=r"noise_std must be .*got -1"):
        editing.causal_trace(model, tok, PROMPT, SUBJECT, " c", noise_std=-1.0)
    with pytest.raises(ValueError, match=r"restore must hold \(layer, position\) pairs.*got \(4, 0\)"):
        editing.restored_prob(model, tok, PROMPT, SUBJECT, " c", [(4, 0)])
    with pytest.raises(ValueError, match=r"C must be \(704, 704\), k \(704,\) and v \(256,\)"):
        editing.rome_update(torch.zeros(256, 704), C, torch.ones(700), torch.ones(256))
    with pytest.raises(ValueError, match="positive definite"):
        editing.rome_update(torch.zeros(2, 3), torch.zeros(3, 3), torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"second_moment must be \(704, 704\)"):
        editing.edit_fact(model, tok, PROMPT, SUBJECT, " k a t", layer=0, second_moment=C[:10, :10])
    with pytest.raises(ValueError, match=r"prefixes must be a non-empty list of strings, got \[\]"):
        editing.edit_fact(model, tok, PROMPT, SUBJECT, " k a t", layer=0, second_moment=C, prefixes=[])
    with pytest.raises(ValueError, match=r"params must be None or a non-empty list of parameter names.*'lm_head'"):
        editing.finetune_fact(model, tok, PROMPT, " k a t", params=["lm_head"])
    with pytest.raises(ValueError, match=r"steps must be a positive int, got 0"):
        editing.finetune_fact(model, tok, PROMPT, " k a t", steps=0)
    with pytest.raises(ValueError, match=r"kl_weight > 0 needs kl_prompts"):
        editing.target_value(model, tok, 0, PROMPT, SUBJECT, " k", kl_weight=1.0)
    with pytest.raises(ValueError, match=r"prompts must be a non-empty list of strings, got \[\]"):
        editing.next_token_probs(model, tok, [])
    assert _no_hooks(model)
