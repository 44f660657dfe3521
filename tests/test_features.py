"""harness.features: definitions against hand computations, lag order, memory, both APIs agree."""

from __future__ import annotations

import math

import pytest
import torch

from harness.features import (
    FeatureSpec,
    FeatureState,
    History,
    abs_pow,
    feature_beta,
    is_variable_name,
    log_sign_preprocess,
    parse_variable,
    signed_pow,
    variable_name,
)

GRADS = [
    torch.tensor([1.0, -2.0, 0.5, 0.0]),
    torch.tensor([3.0, 1.0, -0.5, 0.0]),
    torch.tensor([-1.0, 4.0, 2.0, 1e-3]),
]
EPS = 1e-8


def ema_hat(seq: list[torch.Tensor], beta: float) -> torch.Tensor:
    """Bias-corrected EMA of a sequence, written out by hand."""
    t = len(seq)
    acc = sum((1 - beta) * beta ** (t - 1 - i) * x for i, x in enumerate(seq))
    return acc / (1 - beta**t)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_definitions_with_bias_correction(t: int) -> None:
    spec = FeatureSpec(("g", "m_hat", "g_hat", "m05", "m09", "m099", "mn09"))
    fs = FeatureState(spec, 4)
    for g in GRADS[:t]:
        feats = fs.update(g)
    seq = GRADS[:t]
    g = seq[-1]
    v_hat = ema_hat([x * x for x in seq], 0.95)
    denom = v_hat.sqrt() + EPS
    expected = {
        "g": g,
        "m_hat": ema_hat(seq, 0.95) / denom,
        "g_hat": g / denom,
        "m05": ema_hat(seq, 0.5),
        "m09": ema_hat(seq, 0.9),
        "m099": ema_hat(seq, 0.99),
        "mn09": ema_hat(seq, 0.9) / (ema_hat([x.abs() ** 2 for x in seq], 0.9).sqrt() + EPS),
    }
    assert feats.shape == (4, len(spec.names))
    for i, name in enumerate(spec.names):
        torch.testing.assert_close(feats[:, i], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_first_step_is_sign_and_momenta_equal_gradient() -> None:
    spec = FeatureSpec(("m_hat", "g_hat", "m09", "mn099"))
    feats = FeatureState(spec, 4).update(GRADS[0])
    sign = torch.tensor([1.0, -1.0, 1.0, 0.0])
    torch.testing.assert_close(feats[:, 0], sign, atol=1e-6, rtol=0)
    torch.testing.assert_close(feats[:, 1], sign, atol=1e-6, rtol=0)
    torch.testing.assert_close(feats[:, 2], GRADS[0])  # bias correction: the first EMA is g itself
    torch.testing.assert_close(feats[:, 3], sign, atol=1e-6, rtol=0)


def test_norm_p_one() -> None:
    spec = FeatureSpec(("mn05",), norm_p=1.0)
    fs = FeatureState(spec, 4)
    for g in GRADS:
        out = fs.update(g)
    expected = ema_hat(GRADS, 0.5) / (ema_hat([x.abs() for x in GRADS], 0.5) + EPS)
    torch.testing.assert_close(out[:, 0], expected)


def test_scale_invariant_features() -> None:
    spec = FeatureSpec(("m_hat", "g_hat", "mn09"))
    a, b = FeatureState(spec, 4), FeatureState(spec, 4)
    for g in GRADS:
        fa, fb = a.update(g), b.update(100.0 * g)
    torch.testing.assert_close(fa[:3], fb[:3], rtol=1e-5, atol=1e-5)


def test_functional_matches_stateful_and_does_not_mutate() -> None:
    spec = FeatureSpec(("g", "m_hat", "g_hat", "m09", "mn099"), lags=3)
    fs = FeatureState(spec, 4)
    state = spec.init(4)
    for g in GRADS:
        before = {k: v.clone() for k, v in state.items()}
        feats_f, new = spec.step(state, g)
        for k in before:
            assert torch.equal(before[k], state[k]), f"step mutated {k}"
        state = new
        feats_s = fs.update(g)
        torch.testing.assert_close(feats_f, feats_s)
    torch.testing.assert_close(spec.lagged(state), fs.lagged())
    assert spec.valid_lags(state) == 3
    assert int(state["t"]) == 3


def test_functional_is_differentiable() -> None:
    spec = FeatureSpec(("m_hat", "m09"))
    g = torch.tensor([0.5, -1.0], requires_grad=True)
    feats, _ = spec.step(spec.init(2), g)
    feats.sum().backward()
    assert g.grad is not None and torch.isfinite(g.grad).all()


def test_lags_order_newest_first_and_zeros_before_filled() -> None:
    spec = FeatureSpec(("g",), lags=4)
    fs = FeatureState(spec, 2)
    assert fs.history is not None and fs.history.valid == 0
    for k in range(1, 4):
        fs.update(torch.full((2,), float(k)))
    hist = fs.lagged()
    assert hist.shape == (2, 1, 4)
    assert hist[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert fs.history.valid == 3
    assert fs.history.mask().tolist() == [True, True, True, False]
    for k in range(4, 7):
        fs.update(torch.full((2,), float(k)))
    assert fs.lagged()[1, 0].tolist() == [6.0, 5.0, 4.0, 3.0]
    assert fs.history.valid == 4

    # functional history: the same order
    state = spec.init(2)
    for k in range(1, 4):
        _, state = spec.step(state, torch.full((2,), float(k)))
    assert spec.lagged(state)[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_history_standalone_and_state_dict() -> None:
    h = History(3, 2, 5)
    for k in range(7):
        h.push(torch.full((3, 2), float(k)))
    h2 = History(3, 2, 5)
    h2.load_state_dict(h.state_dict())
    torch.testing.assert_close(h.get(), h2.get())
    assert h.get()[0, 0].tolist() == [6.0, 5.0, 4.0, 3.0, 2.0]


def test_variable_names_match_flat_layout() -> None:
    spec = FeatureSpec(("g", "m_hat"), lags=3)
    fs = FeatureState(spec, 1)
    for g in GRADS[:2]:
        fs.update(g[:1])
    flat = fs.lagged().reshape(1, -1)
    names = spec.variable_names()
    assert names == ["g_0", "g_1", "g_2", "m_hat_0", "m_hat_1", "m_hat_2"]
    assert flat[0, names.index("g_1")] == GRADS[0][0]
    assert flat[0, names.index("g_0")] == GRADS[1][0]
    assert flat[0, names.index("g_2")] == 0.0


def test_variable_name_round_trip() -> None:
    for feat in ("g", "m_hat", "g_hat", "m099", "mn09"):
        for lag in (0, 7, 19):
            assert parse_variable(variable_name(feat, lag)) == (feat, lag)
    assert parse_variable("m_hat_12") == ("m_hat", 12)
    for bad in (
        "g",
        "g_",
        "_3",
        "m_hat_x",
        "m_hat_-1",
        "g_03",
        "g__1",
        "m__hat_0",
        "g_0\n",
        "g_\u00b2",
        "1g_0",
    ):
        with pytest.raises(ValueError):
            parse_variable(bad)
        assert not is_variable_name(bad)
    assert is_variable_name("m_hat_12") and is_variable_name("g_0")
    for bad_feature in ("m.hat", "m__hat", "g_"):
        with pytest.raises(ValueError):
            variable_name(bad_feature, 0)


def test_one_variable_parser() -> None:
    from harness.symbolic import lang
    from harness.symbolic.lang import names

    assert lang.split_variable is parse_variable and names.split_variable is parse_variable
    assert lang.is_variable_name is is_variable_name


def test_memory_only_what_is_needed() -> None:
    assert FeatureSpec(("g",)).accumulators() == {}
    assert set(FeatureSpec(("g_hat",)).accumulators()) == {"v"}
    assert set(FeatureSpec(("m_hat", "g_hat")).accumulators()) == {"m", "v"}
    assert len(FeatureSpec(("m09",)).accumulators()) == 1
    assert len(FeatureSpec(("m09", "mn09")).accumulators()) == 2
    assert FeatureState(FeatureSpec(("g",)), 100).nbytes() == 0
    assert FeatureState(FeatureSpec(("m_hat",)), 100).nbytes() == 2 * 100 * 4
    assert FeatureState(FeatureSpec(("g",), lags=20), 100).nbytes() == 100 * 20 * 4
    assert "hist" not in FeatureSpec(("g",)).init(3)


def test_spec_validation_and_serialisation() -> None:
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureSpec(("nope",))
    with pytest.raises(ValueError):
        FeatureSpec(("g", "g"))
    with pytest.raises(ValueError):
        FeatureSpec(("g",), lags=0)
    assert feature_beta("m0999") == ("m", 0.999)
    assert feature_beta("mn05") == ("mn", 0.5)
    assert feature_beta("m_hat") is None
    spec = FeatureSpec(("m_hat", "mn09"), lags=20, beta1=0.9, beta2=0.999)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.with_lags(1).lags == 1


def test_feature_state_round_trip() -> None:
    spec = FeatureSpec(("m_hat", "g"), lags=2)
    a = FeatureState(spec, 4)
    a.update(GRADS[0])
    b = FeatureState(spec, 4)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.update(GRADS[1]), b.update(GRADS[1]))
    torch.testing.assert_close(a.lagged(), b.lagged())
    with pytest.raises(ValueError):
        FeatureState(FeatureSpec(("g",)), 4).load_state_dict(a.state_dict())


def test_raw_pieces() -> None:
    x = torch.tensor([-4.0, 0.0, 9.0])
    torch.testing.assert_close(signed_pow(x, 0.5), torch.tensor([-2.0, 0.0, 3.0]))
    e = torch.tensor(1.5, requires_grad=True)
    (signed_pow(x, e).sum() + abs_pow(x, e).sum()).backward()
    assert torch.isfinite(e.grad)
    pre = log_sign_preprocess(torch.tensor([1.0, -math.e, 1e-6]), p=10.0)
    torch.testing.assert_close(pre[0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(pre[1], torch.tensor([0.1, -1.0]))
    torch.testing.assert_close(pre[2], torch.tensor([-1.0, 1e-6 * math.exp(10.0)]))


def test_stateful_columns_match_the_functional_arithmetic() -> None:
    """``update_columns_`` (the optimizer's path: lerp_/addcmul_ EMAs, unstacked columns) and ``update_`` agree
    with :meth:`FeatureSpec.advance` to float rounding over many steps, for every kind of feature."""
    spec = FeatureSpec(("g", "m_hat", "g_hat", "eta", "m09", "mn099", "m05"), beta1=0.9, beta2=0.999)
    gen = torch.Generator().manual_seed(0)
    acc_a = {k: torch.zeros(5000) for k in spec.accumulators()}
    acc_b = {k: torch.zeros(5000) for k in spec.accumulators()}
    acc_f = {k: torch.zeros(5000) for k in spec.accumulators()}
    for t in range(1, 41):
        g = torch.randn(5000, generator=gen) * (10.0 ** (t % 3 - 1))
        g[:7] = 0.0
        cols = spec.update_columns_(acc_a, g, float(t))
        stacked = spec.update_(acc_b, g, float(t))
        feats, acc_f = spec.advance(acc_f, g, float(t))
        assert len(cols) == len(spec.names) and all(c.shape == (5000,) for c in cols)
        assert torch.equal(torch.stack(cols, dim=-1), stacked)
        torch.testing.assert_close(stacked, feats, rtol=1e-5, atol=1e-6)
    for k in acc_f:
        torch.testing.assert_close(acc_a[k], acc_f[k], rtol=1e-5, atol=1e-5, msg=k)  # values up to ~30
