"""The distill stage: fronts over raw features, held-out R², TPF, MC, choice, outputs and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.registry import SR_BACKENDS
from harness.stages.collect import SRDataset, collect
from harness.stages.distill import (
    BackendUnavailableError,
    choose,
    distill,
    front_summary,
    merge_and_choose,
    write_outputs,
)
from harness.symbolic.lang import Equation, ParetoFront


@pytest.fixture(scope="module")
def momentum_ds() -> SRDataset:
    mlp = {"name": "mlp", "kwargs": {"hidden": [8], "batch_size": 32}, "steps": 60}
    return collect(
        {"rule": "momentum", "kwargs": {"lr": 0.05, "beta": 0.6}},
        [mlp],
        n_samples=1500,
        seeds_per_optimizee=1,
    )


@pytest.fixture(scope="module")
def sgd_ds() -> SRDataset:
    return collect(
        {"rule": "sgd", "kwargs": {"lr": 0.01}}, [{"name": "quadratic_cos", "steps": 40}], n_samples=300
    )


def test_linear_backend_recovers_momentum(momentum_ds: SRDataset) -> None:
    front = distill(momentum_ds, "linear", {"max_complexity": 200}, seed=0)
    best = front.best()
    assert best.metrics["r2_val"] > 0.99
    assert best.metrics["r2_val_scaled"] == pytest.approx(best.metrics["r2_val"], abs=1e-9)
    # raw coefficients: update = -lr * sum_i beta^i g_{t-i}; TPF = beta / (1 - beta) = 1.5
    values = {
        v: float(
            best.evaluate({**{n: np.zeros(1) for n in momentum_ds.names}, v: np.ones(1)})[0]
            - best.evaluate({n: np.zeros(1) for n in momentum_ds.names})[0]
        )
        for v in ("g_0", "g_1", "g_2")
    }
    assert values == pytest.approx({"g_0": -0.05, "g_1": -0.03, "g_2": -0.018}, rel=1e-3)
    assert best.metrics["tpf"] == pytest.approx(1.5, abs=0.05)
    assert best.metrics["tpf_g"] == best.metrics["tpf"]
    # TPF grows with complexity on this nested linear front (more lags enter)
    tpfs = [e.metrics["tpf"] for e in front if math.isfinite(e.metrics["tpf"])]
    assert tpfs[-1] > tpfs[1]
    for eq in front:
        assert eq.provenance["feature_spec"] == momentum_ds.feature_spec
        assert eq.provenance["backend"] == "linear" and eq.provenance["seed"] == 0
        assert {"r2_train", "r2_val", "mse_val", "r2_train_scaled", "complexity_scaled"} <= set(eq.metrics)
    assert front.provenance["mc"] == choose(front).complexity
    assert front.provenance["settings"]["seed"] == 0 and front.provenance["n_val"] == momentum_ds.n_val


def test_operon_tiny_budget_recovers_sgd(sgd_ds: SRDataset) -> None:
    pytest.importorskip("pyoperon")
    settings = {"operators": ["add", "mul"], "population_size": 50, "iterations": 10, "max_complexity": 10}
    front = distill(sgd_ds, "operon", settings, seed=1)
    best = front.best()
    assert best.metrics["r2_val"] > 0.999
    X, y = sgd_ds.raw("val")
    assert np.allclose(best.evaluate(X, sgd_ds.names), -0.01 * X[:, 0], rtol=1e-3, atol=1e-6)
    assert front.provenance["seed"] == 1 and front.provenance["settings"]["population_size"] == 50
    assert all(e.provenance["feature_spec"]["names"] == ["g"] for e in front)


def _front() -> ParetoFront:
    rows = [
        ("g_0", 0.5),
        ("0.5*g_0 + g_1", 0.995),
        ("0.5*g_0 + 0.25*g_1 + g_2", 0.999),
        ("0.5*g_0 + 0.25*g_1 + 0.1*g_2 + g_3", 0.9995),
    ]
    eqs = [Equation.parse(t).with_metrics(r2_val=r, r2_train=r) for t, r in rows]
    return ParetoFront(eqs, {"mc_threshold": 0.01})


def test_choose_by_mc_best_and_complexity() -> None:
    front = _front()
    c = front.complexities
    assert choose(front) == front[1]  # within 0.01 of 0.9995
    assert choose(front, "mc", threshold=0.0001) == front[3]
    assert choose(front, "best") == front[3]
    assert choose(front, c[2]) == front[2]
    with pytest.raises(ValueError):
        choose(front, "nope")
    with pytest.raises(ValueError):
        choose(ParetoFront([]))


def test_write_outputs(momentum_ds: SRDataset, tmp_path) -> None:
    front = distill(momentum_ds, "linear", {"max_complexity": 40}, seed=0)
    paths = write_outputs(front, tmp_path / "out", momentum_ds)
    assert set(paths) == {"equations.json", "best.json", "pareto.png", "tpf.png"}
    assert all(p.is_file() and p.stat().st_size > 0 and p.name == k for k, p in paths.items())
    back = ParetoFront.load(paths["equations.json"])
    assert [e.text for e in back] == [e.text for e in front]
    assert back[0].provenance["feature_spec"] == momentum_ds.feature_spec
    best = Equation.load(paths["best.json"])
    assert best == choose(front) and best.provenance["chosen_by"] == "mc"
    paths2 = write_outputs(front, tmp_path / "out2", how="best")  # no data: TPF plot from metrics
    assert Equation.load(paths2["best.json"]) == front.best() and paths2["tpf.png"].is_file()
    summary = front_summary(front)
    assert summary["mc"] == choose(front).complexity and summary["best_r2_val"] > 0.99


def test_merge_and_choose(momentum_ds: SRDataset, tmp_path) -> None:
    small = distill(momentum_ds, "linear", {"max_complexity": 13}, seed=0)
    large = distill(momentum_ds, "linear", {"max_complexity": 60}, seed=1)
    paths = merge_and_choose([small.save(tmp_path / "a.json"), large], "best", tmp_path / "merged")
    assert set(paths) == {"front.json", "chosen.json", "chosen.tex", "pareto.png", "tpf.png"}
    assert paths["chosen.tex"].read_text().startswith("\\[ \\Delta x = ")
    merged = ParetoFront.load(paths["front.json"])
    assert merged.best().metrics["r2_val"] == large.best().metrics["r2_val"]
    assert [m["max_complexity"] for m in merged.provenance["merged"]] == [13, 60]
    assert merged.provenance["mc"] == choose(merged).complexity
    chosen = Equation.load(paths["chosen.json"])
    assert chosen == merged.best() and chosen.provenance["chosen_by"] == "best"
    assert chosen.provenance["feature_spec"] == momentum_ds.feature_spec


class _Unavailable:
    name = "unavailable_test"

    def available(self) -> tuple[bool, str]:
        return False, "the test engine is not installed; pip install test-engine"

    def fit(self, *args, **kwargs):  # pragma: no cover - never reached
        raise AssertionError


def test_unavailable_and_unknown_backends(sgd_ds: SRDataset, monkeypatch) -> None:
    SR_BACKENDS.names()  # load built-ins first
    monkeypatch.setitem(SR_BACKENDS._items, "unavailable_test", _Unavailable)
    with pytest.raises(BackendUnavailableError, match="unavailable_test.*pip install test-engine"):
        distill(sgd_ds, "unavailable_test", {}, seed=0)
    with pytest.raises(KeyError, match="known SR backends: .*linear"):
        distill(sgd_ds, "no_such_backend", {}, seed=0)
    with pytest.raises(ValueError, match="unknown SR settings"):
        distill(sgd_ds, "linear", {"populaton": 3}, seed=0)


def test_eq6_skeleton_keeps_one_gamma_in_raw_units() -> None:
    """Unscaling would give every column its own gamma (the columns' scales differ); the raw rule is refit
    with the tie kept, so meta-tuning moves one gamma, and it still fits the teacher's updates."""
    from harness.stages.meta_tune.common import constant_slots

    ds = collect(
        {"rule": "adam", "kwargs": {"lr": 0.01}},
        [{"name": "quadratic_cos", "steps": 40}],
        features=["m_hat", "g_hat", "eta"],
        lags=2,
        n_samples=400,
        seed=0,
    )
    assert len(set(np.round(ds.x_scale, 6))) > 1  # the columns do have different scales
    front = distill(ds, "skeleton", {"extra": {"form": "eq6"}, "max_complexity": 80})
    (eq,) = list(front)
    (tie,) = eq.provenance["tie_groups"]
    assert len(tie) > 1 and max(tie) < eq.n_constants
    assert len({eq.constants[i] for i in tie}) == 1
    assert constant_slots(eq)[0] == sorted(tie)
    assert {"m_hat", "g_hat", "eta"} == set(eq.features_used()) and eq.metrics["r2_val"] > 0.9
