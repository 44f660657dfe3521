"""The learnable ``eta`` feature (the paper's Sec. 4.3): one definition, shared by the RP(extra) teacher,
the SR dataset, eq. 6 and the symbolic optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.features import (
    ETA_A_MAX,
    ETA_DEFAULT_PARAMS,
    ETA_PARAM_NAMES,
    FeatureSpec,
    FeatureState,
    eta_moment_inputs,
)
from harness.registry import TEACHERS
from harness.stages.collect import collect
from harness.symbolic.families import eq6
from harness.symbolic.optim.optimizer import SymbolicOptimizer, functional_step, init_functional_state


def _grads(n: int = 7, steps: int = 12, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, generator=g) * 10 ** torch.empty(n).uniform_(-4, 0, generator=g) for _ in range(steps)
    ]


def test_eta_by_hand_and_equal_to_m_hat_at_identity_params() -> None:
    b1, b2, eps = 0.9, 0.99, 1e-8
    params = (0.7, -0.2, 0.3, 0.4, 1.5, -0.25)
    spec = FeatureSpec(("m_hat", "eta"), beta1=b1, beta2=b2, eps=eps, eta_params=params)
    fs = FeatureState(spec, 7, dtype=torch.float64)
    k1, k2, a1, l1, l2, a2 = params
    m = v = torch.zeros(7, dtype=torch.float64)
    for t, g in enumerate(_grads(), start=1):
        g = g.double()
        feats = fs.update(g)
        s = torch.sign(g) * g.abs()
        num = k1 * s.abs() ** (1 + a1) * torch.sign(g) + k2 * s.abs() ** (1 - a1) * torch.sign(g)
        den = abs(l1) * g.abs() ** (2 + a2) + abs(l2) * g.abs() ** (2 - a2)
        m = b1 * m + (1 - b1) * num
        v = b2 * v + (1 - b2) * den
        want = (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
        torch.testing.assert_close(feats[:, 1], want, rtol=1e-9, atol=1e-12)
    identity = FeatureSpec(("m_hat", "eta"), eta_params=(0.5, 0.5, 0.0, 0.5, 0.5, 0.0))
    fs = FeatureState(identity, 7, dtype=torch.float64)
    for g in _grads(seed=1):
        feats = fs.update(g.double())
        torch.testing.assert_close(feats[:, 1], feats[:, 0], rtol=1e-6, atol=1e-9)


def test_eta_keeps_the_sign_of_g_and_clips_exponents() -> None:
    g = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0])
    num, den = eta_moment_inputs(g, (1.0, 1.0, 5.0, 1.0, 1.0, -5.0))  # a beyond ETA_A_MAX: clipped
    clipped_num, clipped_den = eta_moment_inputs(g, (1.0, 1.0, ETA_A_MAX, 1.0, 1.0, -ETA_A_MAX))
    torch.testing.assert_close(num, clipped_num)
    torch.testing.assert_close(den, clipped_den)
    assert torch.equal(torch.sign(num), torch.sign(g))
    assert bool((den[g != 0] > 0).all()) and torch.isfinite(den).all()


def test_eta_functional_matches_stateful_and_is_differentiable_in_its_params() -> None:
    spec = FeatureSpec(("g_hat", "eta"), lags=3, eta_params=(0.6, 0.3, 0.2, 0.5, 0.7, 0.1))
    fs = FeatureState(spec, 7)
    params = torch.tensor(spec.eta_params, requires_grad=True)
    state = spec.init(7)
    for g in _grads():
        want = fs.update(g)
        got, state = spec.step(state, g, eta_params=params)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(state["hist"], fs.lagged(), rtol=1e-5, atol=1e-7)
    got[:, 1].square().sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


def test_eta_spec_validation_and_round_trip() -> None:
    spec = FeatureSpec(("m_hat", "eta"), lags=2)
    assert spec.eta_params == ETA_DEFAULT_PARAMS and len(ETA_PARAM_NAMES) == 6
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert "eta_params" not in FeatureSpec(("m_hat",)).to_dict()
    assert spec.with_lags(5).eta_params == spec.eta_params
    with pytest.raises(ValueError, match="'eta' is not among the features"):
        FeatureSpec(("m_hat",), eta_params=ETA_DEFAULT_PARAMS)
    with pytest.raises(ValueError, match="6 finite numbers"):
        FeatureSpec(("eta",), eta_params=(1.0, 2.0))
    with pytest.raises(ValueError, match="6 finite numbers"):
        FeatureSpec(("eta",), eta_params=(1.0, 2.0, math.nan, 1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="6 numbers"):
        FeatureSpec(("eta",), eta_params=("a", "b", "c", "d", "e", "f"))


def test_rp_extra_reads_m_hat_g_hat_eta_and_exposes_its_eta_params() -> None:
    teacher = TEACHERS.get("rp_extra")()
    assert teacher.n_inputs == 3 and teacher.eta is not None
    spec = teacher.input_features()
    assert spec.names == ("m_hat", "g_hat", "eta")
    with torch.no_grad():
        teacher.eta.k.copy_(torch.tensor([0.8, 0.1]))
        teacher.eta.a_raw.copy_(torch.tensor([0.3, -0.4]))
    spec = teacher.input_features()
    assert spec.eta_params == pytest.approx(tuple(float(v) for v in teacher.eta.params().detach()))
    assert spec.eta_params[0] == pytest.approx(0.8) and spec.eta_params[2] == pytest.approx(
        ETA_A_MAX * math.tanh(0.3)
    )
    # the teacher's own eta (its state) equals the feature module's eta with the exported parameters
    fs = FeatureState(FeatureSpec(("eta",), eta_params=spec.eta_params), 7)
    st = teacher.eta.init_state(7)
    for g in _grads():
        want = fs.update(g)[:, 0]
        got, st = teacher.eta(g, st)
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)


def test_collect_records_eta_with_the_teachers_params(tmp_path) -> None:
    from teachers.checkpoint import load_teacher, save_teacher

    teacher = TEACHERS.get("rp_extra")(hidden=5, out_scale=0.1)
    with torch.no_grad():
        teacher.eta.k.copy_(torch.tensor([0.9, -0.3]))
    path = save_teacher(teacher, tmp_path / "t.pt")
    assert load_teacher(path).input_features() == teacher.input_features()  # eta's params in the checkpoint
    ds = collect({"checkpoint": str(path)}, [{"name": "quadratic_cos", "steps": 30}], n_samples=60, lags=3)
    assert [n for n in ds.names if n.startswith("eta")] == ["eta_0", "eta_1", "eta_2"]
    assert ds.feature_spec["eta_params"] == pytest.approx(list(teacher.input_features().eta_params))
    assert ds.spec.names == ("m_hat", "g_hat", "eta")
    # the recorded column is real data (finite, not all zero)
    X, _ = ds.raw("train")
    col = X[:, ds.names.index("eta_0")]
    assert np.isfinite(col).all() and np.abs(col).max() > 0


def test_eq6_over_m_hat_g_hat_eta_runs_and_tunes_eta_params() -> None:
    eq = eq6(("m_hat", "g_hat", "eta"), L=2, eta_params=(0.6, 0.4, 0.1, 0.5, 0.5, 0.2))
    assert eq.provenance["feature_spec"]["eta_params"] == [0.6, 0.4, 0.1, 0.5, 0.5, 0.2]
    assert {v for v in eq.variables} >= {"eta_0", "eta_1"}
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    x, y = torch.randn(64, 5), torch.randn(64, 3)
    params = {k: v.detach().clone() for k, v in lin.named_parameters()}
    opt = SymbolicOptimizer(lin.parameters(), eq)
    fp = torch.tensor(eq.provenance["feature_spec"]["eta_params"], requires_grad=True)
    module = eq.compile()
    state = init_functional_state(eq, params)
    for _ in range(4):
        lin.zero_grad()
        loss = torch.nn.functional.mse_loss(lin(x), y)
        loss.backward()
        grads = {k: v.grad.detach().clone() for k, v in lin.named_parameters()}
        opt.step()
        params, state = functional_step(module, params, grads, state, feature_params=fp)
    for k, v in lin.named_parameters():  # stateful and functional paths agree
        torch.testing.assert_close(params[k].detach(), v.detach(), rtol=1e-5, atol=1e-7)
    sum(p.sum() for p in params.values()).backward()
    assert fp.grad is not None and fp.grad.abs().sum() > 0
