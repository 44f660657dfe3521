"""Named equation families: Adam as an equation and the paper's eq. 6."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.features import FeatureSpec
from harness.symbolic.families import adam_equation, build_family, eq6, sgd_equation
from harness.symbolic.lang import Equation


def test_adam_equation_form_and_feature_spec() -> None:
    eq = adam_equation(lr=1e-3, beta1=0.8, beta2=0.99, eps=1e-6)
    assert eq.text == "-0.001*m_hat_0" and eq.constants == (-0.001,)
    spec = FeatureSpec.from_dict(eq.provenance["feature_spec"])
    assert (spec.names, spec.beta1, spec.beta2, spec.eps) == (("m_hat",), 0.8, 0.99, 1e-6)
    back = Equation.from_json(json.dumps(eq.to_json()))
    assert back == eq and back.provenance["feature_spec"] == eq.provenance["feature_spec"]
    assert sgd_equation(0.1).text == "-0.1*g_0"
    with pytest.raises(ValueError):
        adam_equation(lr=0.0)


def test_eq6_structure_tie_group_and_values() -> None:
    W = [[0.01, 0.002], [0.003, 0.0004]]
    eq = eq6(("m_hat", "g_hat"), L=2, W=W, gamma=0.5)
    assert set(eq.variables) == {"m_hat_0", "m_hat_1", "g_hat_0", "g_hat_1"}
    assert eq.n_constants == 3 * 4  # W, gamma, gamma per term (one per occurrence)
    (tie,) = eq.provenance["tie_groups"]
    assert len(tie) == 8 and all(eq.constants[i] == 0.5 for i in tie)
    assert FeatureSpec.from_dict(eq.provenance["feature_spec"]).lags == 2

    rng = np.random.default_rng(0)
    cols = {v: rng.normal(size=50) * 3 for v in eq.variables}
    expect = -sum(
        W[i][tau] * 0.5 * np.tanh(cols[f"{f}_{tau}"] / 0.5)
        for i, f in enumerate(("m_hat", "g_hat"))
        for tau in range(2)
    )
    np.testing.assert_allclose(eq.evaluate(cols), expect, rtol=1e-12)

    # compiled: one parameter per occurrence, or one per tie group
    mod = eq.compile(dtype=torch.float64)
    assert len(mod.constants) == 12
    out = mod({k: torch.from_numpy(v) for k, v in cols.items()})
    np.testing.assert_allclose(out.detach().numpy(), expect, rtol=1e-12)
    tied = eq.compile(tie_groups=eq.provenance["tie_groups"])
    assert len(tied.constants) == 4 + 1
    out.sum().backward()
    assert all(c.grad is not None for c in mod.constants)

    # positive W and positive features: a descent (negative) update; JSON keeps the tie group
    assert (eq.evaluate({v: np.ones(1) for v in eq.variables}) < 0).all()
    back = Equation.from_json(eq.to_json())
    assert back == eq and back.provenance["tie_groups"] == [tie]


def test_eq6_weight_forms_and_errors() -> None:
    a = eq6(("m_hat",), L=3, W={"m_hat": [1e-3, 2e-3, 3e-3]})
    b = eq6(("m_hat",), L=3, W=[[1e-3, 2e-3, 3e-3]])
    assert a == b
    c = eq6(("m_hat", "g_hat"), L=2, W=[1e-3, 2e-3])  # one weight per feature
    assert sorted(c.constants) == sorted([1e-3, 1e-3, 2e-3, 2e-3] + [1.0] * 8)
    default = eq6(("m_hat", "g_hat"), L=20, lr=1e-3)
    assert len(default.variables) == 40 and max(int(v.rsplit("_", 1)[1]) for v in default.variables) == 19
    with pytest.raises(ValueError, match="shape"):
        eq6(("m_hat",), L=2, W=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError):
        eq6(("nope",), L=2)
    with pytest.raises(ValueError):
        eq6(L=0)
    with pytest.raises(ValueError):
        eq6(gamma=-1.0)
    assert build_family("eq6", L=1) == eq6(L=1)
    with pytest.raises(ValueError, match="known"):
        build_family("lion")
