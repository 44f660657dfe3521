"""The distill stage returns raw rules without a gradient-free term by default, and counts fitted complexity.

The dataset's target has a TRUE offset (``update = -0.01*m_hat_0 + 0.003``) and non-unit scales, so the
raw equations go through the unscaling that must keep them zero at zero.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.features import FeatureSpec
from harness.registry import STAGES
from harness.stages.base import given
from harness.stages.collect import SRDataset
from harness.stages.distill import choose, distill, front_summary
from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.metrics import fitted_complexity
from harness.symbolic.sr.offset import is_zero_at_zero, value_at_zero, zero_tolerance

OFFSET = 0.003


@pytest.fixture(scope="module")
def offset_ds() -> SRDataset:
    rng = np.random.default_rng(0)
    names = ["m_hat_0", "g_hat_0"]
    x_scale, y_scale = np.array([0.7, 1.9]), 0.013
    X = rng.normal(size=(700, 2)) * x_scale
    y = -0.01 * X[:, 0] + OFFSET + 1e-4 * rng.normal(size=700)
    return SRDataset(
        X_train=X[:500] / x_scale,
        y_train=y[:500] / y_scale,
        X_val=X[500:] / x_scale,
        y_val=y[500:] / y_scale,
        names=names,
        x_scale=x_scale,
        y_scale=y_scale,
        feature_spec=FeatureSpec(("m_hat", "g_hat")).to_dict(),
        source={"rule": "synthetic"},
    )


def _check(front: ParetoFront, ds: SRDataset, max_complexity: int) -> None:
    """Raw rules zero at zero; complexity is the fitted form's, within the cap, and what the front counts."""
    assert len(front) >= 1
    X, _ = ds.raw("train")
    for eq in front:
        assert value_at_zero(eq) == 0.0
        scaled = Equation.parse(eq.provenance["scaled_expression"])
        assert value_at_zero(scaled) == 0.0
        assert eq.metrics["complexity_scaled"] == scaled.complexity <= max_complexity
        assert fitted_complexity(eq) == scaled.complexity
        np.testing.assert_allclose(
            eq.evaluate(X, ds.names) / ds.y_scale, scaled.evaluate(X / ds.x_scale, ds.names)
        )
    assert front.complexities == [int(e.metrics["complexity_scaled"]) for e in front]
    assert front.provenance["mc"] == fitted_complexity(choose(front))
    assert front_summary(front)["chosen_complexity"] == fitted_complexity(choose(front))


def test_linear_distill_has_no_offset_unless_allowed(offset_ds: SRDataset) -> None:
    front = distill(offset_ds, "linear", {"max_complexity": 7}, seed=0)
    _check(front, offset_ds, 7)
    assert front.provenance["settings"]["allow_offset"] is False
    allowed = distill(offset_ds, "linear", {"max_complexity": 7, "allow_offset": True}, seed=0)
    assert value_at_zero(allowed.best()) == pytest.approx(OFFSET, rel=1e-2)
    assert allowed.best().metrics["r2_val"] > front.best().metrics["r2_val"]


def test_operon_distill_has_no_offset(offset_ds: SRDataset) -> None:
    pytest.importorskip("pyoperon")
    settings = {
        "operators": ["add", "mul", "tanh"],
        "population_size": 50,
        "iterations": 8,
        "max_complexity": 9,
    }
    front = distill(offset_ds, "operon", settings, seed=1)
    _check(front, offset_ds, 9)
    best = front.best()
    assert "m_hat_0" in best.variables and "offset_removed" in best.provenance


def test_skeleton_distill_cancels_a_hidden_offset(offset_ds: SRDataset) -> None:
    form = {"form": "1.0*tanh(1.0*m_hat_0 + 0.5)"}
    front = distill(offset_ds, "skeleton", {"max_complexity": 12, "extra": form}, seed=0)
    (eq,) = front
    _, y = offset_ds.raw("train")
    assert "offset_compensated" in eq.provenance
    assert is_zero_at_zero(eq, zero_tolerance(y))
    assert eq.metrics["complexity_scaled"] <= 12


def test_suite_setting_allow_offset() -> None:
    kind = STAGES.get("distill")
    base = {"kind": "distill", "name": "d", "from_stage": "data"}
    spec = kind.spec_model.model_validate({**base, "settings": {"allow_offset": True}})
    assert given(spec.settings) == {"allow_offset": True}
    assert given(kind.spec_model.model_validate(base).settings) == {}
    with pytest.raises(ValueError, match="allow_offset"):
        kind.spec_model.model_validate({**base, "settings": {"allow_ofset": True}})
