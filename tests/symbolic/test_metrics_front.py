"""R², TPF (sensitivity form == paper eq. 3 on linear rules), MC, Pareto fronts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.metrics import mc, mse, r2, tpf


def test_r2_and_mse() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2(y, y) == 1.0
    assert r2(y, np.full(4, y.mean())) == 0.0
    assert r2(y, y + 1) == pytest.approx(1 - 4 / 5)
    assert r2(y, np.array([1.0, 2.0, np.nan, 4.0])) == -math.inf
    assert r2(np.ones(3), np.ones(3)) == 1.0 and r2(np.ones(3), np.zeros(3)) == 0.0
    assert mse(y, y + 2) == 4.0
    assert r2(np.float32([1, 2, 3]), np.float32([1, 2, 3.0000001])) == pytest.approx(1.0)


def _lags_data(features: dict[str, int], n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{f}_{i}": rng.normal(size=n) for f, lags in features.items() for i in range(lags)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpf_equals_eq3_on_linear_forms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=20)
    eq = Equation.parse(" + ".join(f"{float(v)!r}*g_{i}" for i, v in enumerate(c)))
    expected = float(np.sum(np.arange(20) * np.abs(c)) / np.sum(np.abs(c)))
    result = tpf(eq, _lags_data({"g": 20}))
    assert result.overall == pytest.approx(expected, rel=1e-12)
    assert result.per_feature["g"] == pytest.approx(expected, rel=1e-12)
    # the paper's Table-1 sanity rule sum_i (1 - 0.1 i) g_{t-i}, i < 10
    rule = Equation.parse(" + ".join(f"{1 - 0.1 * i!r}*g_{i}" for i in range(10)))
    w = np.array([1 - 0.1 * i for i in range(10)])
    assert tpf(rule, _lags_data({"g": 10})).overall == pytest.approx(np.sum(np.arange(10) * w) / w.sum())


def test_tpf_per_feature_and_nonlinear() -> None:
    X = _lags_data({"g": 3, "m_hat": 3})
    eq = Equation.parse("-0.01*g_0 + 2.0*m_hat_2 + 1.0*m_hat_0")
    res = tpf(eq, X)
    assert res.per_feature == {"g": 0.0, "m_hat": pytest.approx(4.0 / 3.0)}
    assert res.overall == pytest.approx(2 * 2.0 / (0.01 + 2.0 + 1.0))
    assert tpf(Equation.parse("-0.01*g_0"), X).overall == 0.0
    assert math.isnan(tpf(Equation.parse("0.5"), X).overall)
    # a nonlinear rule: sensitivity of tanh(g_1) is mean(1 - tanh^2), exactly
    nl = tpf(Equation.parse("tanh(g_1) + 1.0*g_0"), X)
    s1 = float(np.mean(1 - np.tanh(X["g_1"]) ** 2))
    assert nl.sensitivity["g_1"] == pytest.approx(s1) and nl.overall == pytest.approx(s1 / (s1 + 1.0))
    # 2-D input with names
    names = list(X)
    arr = np.column_stack([X[k] for k in names])
    assert tpf(eq, arr, names).overall == pytest.approx(res.overall)


def _eq(text: str, **metrics: float) -> Equation:
    return Equation.parse(text, metrics=metrics)


def test_pareto_front_nondominated_merge_and_json(tmp_path) -> None:
    a = _eq("1.0*g_0", r2_train=0.5)
    b = _eq("1.0*g_0 + 1.0*g_1", r2_train=0.9)
    c = _eq("1.0*g_0 + 1.0*g_1 + 1.0*g_2", r2_train=0.8)  # dominated by b
    d = _eq("1.0*g_0 + 1.0*g_1 + 1.0*g_2 + 1.0*g_3", r2_train=0.99)
    front = ParetoFront.from_equations([d, c, b, a, a.copy()])
    assert [e.text for e in front] == [a.text, b.text, d.text]
    other = ParetoFront.from_equations([_eq("tanh(g_0)", r2_train=0.7)])
    merged = front.merge(other)
    assert [e.complexity for e in merged] == [2, 7, 15]
    assert merged.complexities == [2, 7, 15]
    assert merged.best() == d
    assert merged.at_complexity(8) == b
    path = merged.save(tmp_path / "front.json")
    back = ParetoFront.load(path)
    assert [e.text for e in back] == [e.text for e in merged]
    assert [e.metrics for e in back] == [e.metrics for e in merged]


def test_front_score_uses_held_out() -> None:
    rng = np.random.default_rng(0)
    X = {"g_0": rng.normal(size=100), "g_1": rng.normal(size=100)}
    y = 2 * X["g_0"]
    front = ParetoFront([Equation.parse("2.0*g_0"), Equation.parse("1.0*g_1")])
    scored = front.score(X, y)
    assert scored[0].metrics["r2_val"] == 1.0 and scored[0].metrics["mse_val"] == 0.0
    assert front.error(scored[0]) == 0.0


def test_mc_picks_smallest_within_threshold() -> None:
    eqs = [
        _eq("1.0*g_0", r2_val=0.80),  # complexity 3
        _eq("1.0*g_0 + 1.0*g_1", r2_val=0.95),  # 7
        _eq("1.0*g_0 + 1.0*g_1 + 1.0*g_2", r2_val=0.985),  # 11
        _eq("1.0*g_0 + 1.0*g_1 + 1.0*g_2 + 1.0*g_3", r2_val=0.99),  # 15
    ]
    front = ParetoFront(eqs)
    assert mc(front, 0.01) == 11
    assert mc(front, 0.05) == 7
    assert mc(front, 0.0) == 15
    assert mc(front, 0.5) == 3
    assert mc(eqs, 0.5, relative=True) == 11  # within 50% of the best error 0.01 -> error <= 0.015
    # held-out beats train when present: train says the biggest is best, held-out disagrees
    over = [_eq("1.0*g_0", r2_train=0.9, r2_val=0.9), _eq("1.0*g_0 + 1.0*g_1", r2_train=0.99, r2_val=0.8)]
    assert mc(over, 0.0) == 3 and mc(over, 0.0, split="train") == 7
    with pytest.raises(ValueError):
        mc([], 0.1)


def test_front_counts_the_fitted_complexity() -> None:
    """A distilled equation unscaled to raw units prints bigger than the form that was fitted; the front, MC
    and choices by complexity count the fitted form (what max_complexity bounds)."""
    from harness.symbolic.metrics import fitted_complexity

    raw_small = _eq("0.5*g_0", r2_val=0.9, complexity_scaled=3.0)
    raw_big = _eq("0.01*tanh(20.0*g_0) + 0.2*g_1", r2_val=0.99, complexity_scaled=6.0)  # prints as 10
    plain = _eq("tanh(g_0) + 0.5*g_1", r2_val=0.95)  # no fitted-form metric: its own complexity, 6
    assert (raw_big.complexity, fitted_complexity(raw_big), fitted_complexity(plain)) == (10, 6, 6)
    front = ParetoFront.from_equations([raw_big, plain, raw_small])
    assert front.complexities == [3, 6]
    assert front[1] == raw_big  # same fitted complexity as `plain`, better fit
    assert front.at_complexity(6) == raw_big
    assert mc(front, 0.05) == 6 and mc(front, 0.1) == 3
