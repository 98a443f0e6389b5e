"""Parity and bad-input tests for course_utils.ssm (references: transformers' MambaMixer/MambaModel, float64 math)."""

import math

import pytest
import torch

from course_utils import ssm
from course_utils.attention import kv_cache_bytes


def _close(got, expected, atol, what=""):
    diff = (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0
    torch.testing.assert_close(got, expected, rtol=0, atol=atol,
                               msg=lambda m: f"{what} max_diff {diff:.3g} > {atol}\n{m}")


def _scan_inputs(batch, T, E, N, seed, dtype=torch.float64):
    """Random x, Δ > 0, A < 0, B, C, D, h_0 for the scan."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, E, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(batch, T, E, generator=g, dtype=dtype))
    A = -torch.exp(torch.randn(E, N, generator=g, dtype=dtype))
    B, C = torch.randn(batch, T, N, generator=g, dtype=dtype), torch.randn(batch, T, N, generator=g, dtype=dtype)
    D = torch.randn(E, generator=g, dtype=dtype)
    h0 = torch.randn(batch, E, N, generator=g, dtype=dtype)
    return x, delta, A, B, C, D, h0


def _hf_model(seed, **overrides):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = dict(vocab_size=64, hidden_size=32, state_size=8, expand=2, conv_kernel=4, num_hidden_layers=2)
    model = transformers.MambaModel(transformers.MambaConfig(**{**cfg, **overrides})).eval()
    with torch.no_grad():  # perturb the init (D = 1, A_log = log 1..N, small out_proj) so every weight matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def _random_mixer(seed, **kwargs):
    """Our mixer with every parameter perturbed, so no part of it sits at a special init value."""
    torch.manual_seed(seed)
    mixer = ssm.MambaMixer(**kwargs)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return mixer


# ---------------------------------------------------------------------------------------------------------------
# the scan


def test_scan_hand_worked():
    # E = N = 1, T = 2: h1 = Δ1 B1 x1, h2 = exp(Δ2 A) h1 + Δ2 B2 x2, y_t = C_t h_t + D x_t
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.5], [0.25]]], dtype=torch.float64)
    A, D = torch.tensor([[-2.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    B, C = torch.tensor([[[3.0], [1.0]]], dtype=torch.float64), torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    h1 = 0.5 * 3 * 1
    h2 = math.exp(-0.5) * h1 + 0.25 * 1 * 2
    expected = torch.tensor([[[h1 + 0.5], [2 * h2 + 1.0]]], dtype=torch.float64)
    for scan in (ssm.selective_scan, ssm.selective_scan_parallel):
        y, h = scan(x, delta, A, B, C, D)
        _close(y, expected, 1e-12, f"{scan.__name__} y")
        _close(h, torch.tensor([[[h2]]], dtype=torch.float64), 1e-12, f"{scan.__name__} last state")


@pytest.mark.parametrize("batch,T,E,N", [(1, 1, 1, 1), (2, 7, 3, 4), (3, 33, 5, 8)])
@pytest.mark.parametrize("with_D,with_h0", [(True, False), (False, True), (True, True)])
def test_recurrent_equals_parallel(batch, T, E, N, with_D, with_h0):
    x, delta, A, B, C, D, h0 = _scan_inputs(batch, T, E, N, seed=batch * 1000 + T * 10 + E + N + 7 * with_h0)
    D, h0 = (D if with_D else None), (h0 if with_h0 else None)
    y_rec, h_rec = ssm.selective_scan(x, delta, A, B, C, D, h0)
    y_par, h_par = ssm.selective_scan_parallel(x, delta, A, B, C, D, h0)
    assert y_rec.shape == (batch, T, E) and h_rec.shape == (batch, E, N)
    _close(y_par, y_rec, 1e-10, "y")
    _close(h_par, h_rec, 1e-10, "last state")


def test_scan_splits_at_the_state():
    # scanning the first half, then the second from its last state, equals one scan over the whole
    x, delta, A, B, C, D, _ = _scan_inputs(2, 20, 4, 6, seed=11)
    y, h = ssm.selective_scan(x, delta, A, B, C, D)
    y1, h1 = ssm.selective_scan(x[:, :12], delta[:, :12], A, B[:, :12], C[:, :12], D)
    y2, h2 = ssm.selective_scan_parallel(x[:, 12:], delta[:, 12:], A, B[:, 12:], C[:, 12:], D, h1)
    _close(torch.cat([y1, y2], dim=1), y, 1e-10, "y")
    _close(h2, h, 1e-10, "last state")


def test_ssm_matrix_is_causal_and_gives_y():
    x, delta, A, B, C, _, _ = _scan_inputs(2, 9, 3, 4, seed=12)
    M = ssm.ssm_matrix(delta, A, B, C)
    assert M.shape == (2, 3, 9, 9)
    assert torch.all(M.triu(1) == 0), "M[t, s] must be 0 for s > t"
    _close(torch.einsum("bets,bse->bte", M, x), ssm.selective_scan(x, delta, A, B, C)[0], 1e-10, "M x")
    # the diagonal is C_t·B̄_t (no decay yet)
    _close(M.diagonal(dim1=-2, dim2=-1), ((C * B).sum(-1)[:, None] * delta.transpose(1, 2)), 1e-12, "diag")


# ---------------------------------------------------------------------------------------------------------------
# the mixer against transformers


@pytest.mark.parametrize("overrides", [{}, {"hidden_size": 40, "use_bias": True, "use_conv_bias": False},
                                       {"state_size": 16, "expand": 3, "conv_kernel": 2, "time_step_rank": 5}])
def test_mixer_matches_transformers(overrides):
    model = _hf_model(seed=len(overrides), **overrides)
    cfg = model.config
    # transformers 5.x has no MambaMixer.slow_forward: in eval mode on CPU without mamba_ssm/causal_conv1d, forward
    # runs the reference PyTorch path (the fused training kernel is skipped)
    g = torch.Generator().manual_seed(21 + len(overrides))
    for i, layer in enumerate(model.layers):
        ours = ssm.MambaMixer(cfg.hidden_size, cfg.state_size, cfg.conv_kernel, cfg.expand, cfg.time_step_rank,
                              use_conv_bias=cfg.use_conv_bias, use_bias=cfg.use_bias)
        ours.load_state_dict(layer.mixer.state_dict())
        x = torch.randn(2, 13, cfg.hidden_size, generator=g)
        with torch.no_grad():
            _close(ours(x), layer.mixer(x), 1e-5, f"layer {i}")


def _our_mixers(model) -> list:
    """Our MambaMixer for each layer of a transformers MambaModel, holding that layer's weights."""
    cfg, mixers = model.config, []
    for layer in model.layers:
        mixers.append(ssm.MambaMixer(cfg.hidden_size, cfg.state_size, cfg.conv_kernel, cfg.expand))
        mixers[-1].load_state_dict(layer.mixer.state_dict())
    return mixers


def test_model_matches_transformers():
    model = _hf_model(seed=3)
    cfg = model.config
    mixers = _our_mixers(model)
    ids = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(31))
    with torch.no_grad():
        expected = model(ids, use_cache=False).last_hidden_state
        h = model.embeddings(ids)  # (b, T, H)
        for layer, mixer in zip(model.layers, mixers):
            h = h + mixer(layer.norm(h))  # pre-norm residual block
        _close(model.norm_f(h), expected, 1e-5, "last_hidden_state")


def test_cache_and_step_match_transformers():
    # after a prompt our cache holds what transformers' cache_params holds; one decoded token then agrees too
    model = _hf_model(seed=4)
    cfg = model.config
    mixers = _our_mixers(model)
    g = torch.Generator().manual_seed(32)
    ids = torch.randint(0, cfg.vocab_size, (2, 9), generator=g)
    nxt = torch.randint(0, cfg.vocab_size, (2,), generator=g)
    with torch.no_grad():
        hf_cache = model(ids, use_cache=True).cache_params
        caches = [m.empty_cache(2) for m in mixers]
        h = model.embeddings(ids)  # (b, T, H)
        for i, (layer, mixer, cache) in enumerate(zip(model.layers, mixers, caches)):
            h = h + mixer(layer.norm(h), cache)
            _close(cache.conv_state, hf_cache.get_conv_state(i, state_idx=0), 1e-5, f"conv_state layer {i}")
            _close(cache.ssm_state, hf_cache.get_recurrent_state(i, state_idx=0), 1e-5, f"ssm_state layer {i}")
        expected = model(nxt[:, None], cache_params=hf_cache, use_cache=True).last_hidden_state[:, 0]
        h = model.embeddings(nxt)  # (b, H)
        for layer, mixer, cache in zip(model.layers, mixers, caches):
            h = h + mixer.step(layer.norm(h), cache)
        _close(model.norm_f(h), expected, 1e-5, "decoded token")


def test_dt_rank_auto_is_ceil_d_model_over_16():
    assert ssm.MambaMixer(32).dt_rank == 2 and ssm.MambaMixer(40).dt_rank == 3
    assert ssm.MambaMixer(40, dt_rank=7).dt_rank == 7
    m = ssm.MambaMixer(24, d_state=5, expand=3)
    assert m.in_proj.out_features == 2 * 72 and m.x_proj.out_features == 2 + 2 * 5 and m.A_log.shape == (72, 5)


# ---------------------------------------------------------------------------------------------------------------
# decoding with the constant-size cache


@pytest.mark.parametrize("d_conv,use_conv_bias", [(4, True), (1, False), (3, True)])
def test_step_matches_forward(d_conv, use_conv_bias):
    mixer = _random_mixer(seed=40 + d_conv, d_model=24, d_state=6, d_conv=d_conv, use_conv_bias=use_conv_bias)
    x = torch.randn(3, 10, 24, generator=torch.Generator().manual_seed(41 + d_conv))
    cache = mixer.empty_cache(batch=3)
    shapes = (tuple(cache.conv_state.shape), tuple(cache.ssm_state.shape))
    assert shapes == ((3, 48, d_conv), (3, 48, 6))
    with torch.no_grad():
        full = mixer(x)
        outs = []
        for t in range(x.shape[1]):
            outs.append(mixer.step(x[:, t], cache))
            assert (tuple(cache.conv_state.shape), tuple(cache.ssm_state.shape)) == shapes, f"cache grew at step {t}"
    _close(torch.stack(outs, dim=1), full, 1e-5, "step by step")


def test_prefill_then_step_matches_forward():
    mixer = _random_mixer(seed=50, d_model=16, d_state=4)
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(51))
    cache = mixer.empty_cache(2)
    with torch.no_grad():
        full = mixer(x)
        prefix = mixer(x[:, :7], cache)  # prefill fills the cache
        middle = mixer(x[:, 7:9], cache)  # a chunk continues from it
        rest = [mixer.step(x[:, t], cache) for t in range(9, 12)]
    _close(torch.cat([prefix, middle, torch.stack(rest, dim=1)], dim=1), full, 1e-5, "prefill + chunk + steps")


# ---------------------------------------------------------------------------------------------------------------
# the size of the state


def test_ssm_state_bytes_hand_worked():
    # mamba-130m: 24 layers, d_model 768 -> E 1536; per layer 1536 × (16 + 4) values; bf16
    assert ssm.ssm_state_bytes(24, 768) == 24 * 1536 * 20 * 2 == 1_474_560
    assert ssm.ssm_state_bytes(2, 10, d_state=3, d_conv=2, expand=3, batch=4, bytes_per_value=4) == 2 * 4 * 30 * 5 * 4
    # a KV cache of the same width grows with the tokens; the SSM state does not have a seq_len at all
    assert kv_cache_bytes(24, 12, 64, seq_len=2048) > 50 * ssm.ssm_state_bytes(24, 768)


@pytest.mark.parametrize("dtype,bytes_per_value", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_ssm_state_bytes_matches_cache_tensors(dtype, bytes_per_value):
    layers = [ssm.MambaMixer(20, d_state=5, d_conv=3, expand=2).to(dtype) for _ in range(3)]
    caches = [m.empty_cache(batch=2) for m in layers]
    with torch.no_grad():  # the cache keeps its size after decoding
        for m, c in zip(layers, caches):
            m.step(torch.randn(2, 20, dtype=dtype), c)
    got = sum(c.nbytes() for c in caches)
    assert got == ssm.ssm_state_bytes(3, 20, 5, 3, 2, batch=2, bytes_per_value=bytes_per_value), got


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_scan_inputs():
    x, delta, A, B, C, D, h0 = _scan_inputs(2, 5, 3, 4, seed=60)
    for scan in (ssm.selective_scan, ssm.selective_scan_parallel):
        with pytest.raises(ValueError, match=r"delta must have shape \(2, 5, 3\).*got \(2, 4, 3\)"):
            scan(x, delta[:, :4], A, B, C, D)
        with pytest.raises(ValueError, match=r"A must have shape \(3, 4\)"):
            scan(x, delta, A[:2], B, C, D)
        with pytest.raises(ValueError, match=r"C must have shape \(2, 5, 4\)"):
            scan(x, delta, A, B, C[..., :3], D)
        with pytest.raises(ValueError, match=r"D must have shape \(3,\)"):
            scan(x, delta, A, B, C, D[:2])
        with pytest.raises(ValueError, match=r"initial_state must have shape \(2, 3, 4\)"):
            scan(x, delta, A, B, C, D, h0[:1])
        with pytest.raises(ValueError, match="x must have 3 dims"):
            scan(x[0], delta, A, B, C, D)
        with pytest.raises(TypeError, match="B must be a floating-point tensor"):
            scan(x, delta, A, B.long(), C, D)
        with pytest.raises(TypeError, match="A must be a torch.Tensor"):
            scan(x, delta, A.tolist(), B, C, D)
        with pytest.raises(ValueError, match="T >= 1"):
            scan(x[:, :0], delta[:, :0], A, B[:, :0], C[:, :0], D)
    with pytest.raises(ValueError, match="delta must have 3 dims"):
        ssm.ssm_matrix(delta[0], A, B, C)
    with pytest.raises(ValueError, match=r"B must have shape \(2, 5, 4\)"):
        ssm.ssm_matrix(delta, A, B[:, :3], C)


def test_bad_mixer_arguments():
    with pytest.raises(ValueError, match="d_state must be a positive int, got 0"):
        ssm.MambaMixer(16, d_state=0)
    with pytest.raises(TypeError, match="d_model must be .*int, got float 16.0"):
        ssm.MambaMixer(16.0)
    with pytest.raises(ValueError, match="dt_rank must be a positive int or 'auto'"):
        ssm.MambaMixer(16, dt_rank="full")
    mixer = ssm.MambaMixer(16, d_state=4)
    with pytest.raises(ValueError, match=r"hidden_states must have shape \(b, T >= 1, 16\), got \(2, 3, 8\)"):
        mixer(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"hidden_state must have shape \(b, 16\)"):
        mixer.step(torch.randn(2, 8), mixer.empty_cache(2))
    with pytest.raises(ValueError, match="cache must hold conv_state"):
        mixer.step(torch.randn(3, 16), mixer.empty_cache(2))
    with pytest.raises(TypeError, match="cache must be a MambaCache"):
        mixer.step(torch.randn(2, 16), {"conv_state": None})
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        mixer.empty_cache(0)


def test_bad_state_bytes_arguments():
    with pytest.raises(ValueError, match="d_state must be a positive int, got 0"):
        ssm.ssm_state_bytes(2, 64, d_state=0)
    with pytest.raises(TypeError, match="n_layers must be .*int, got float 2.5"):
        ssm.ssm_state_bytes(2.5, 64)
    with pytest.raises(ValueError, match="bytes_per_value must be a positive number"):
        ssm.ssm_state_bytes(2, 64, bytes_per_value=0)
