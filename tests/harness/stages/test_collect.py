"""The collect stage: rows, lag order, scaling, the npz format and unscaling equations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.features import FeatureSpec
from harness.registry import OPTIMIZEES, TEACHERS
from harness.stages.collect import SRDataset, collect, collect_from_gradients, unscale_equation
from harness.symbolic.lang import Equation
from teachers.optimizer import TeacherOptimizer

P1 = {"name": "quadratic_cos", "steps": 40}
SGD = {"rule": "sgd", "kwargs": {"lr": 0.01}}


@pytest.fixture(scope="module")
def sgd_ds() -> SRDataset:
    return collect(SGD, [P1], n_samples=300, holdout=0.2, seed=0)


def test_sgd_rows_are_minus_lr_g(sgd_ds: SRDataset) -> None:
    ds = sgd_ds
    assert ds.X_train.shape == (300, 20) and ds.X_val.shape == (60, 20)
    assert ds.y_train.shape == (300,) and ds.y_val.shape == (60,)
    assert ds.names == [f"g_{i}" for i in range(20)] == FeatureSpec(("g",), 20).variable_names()
    assert ds.feature_spec == FeatureSpec(("g",), 20).to_dict()
    assert ds.source == {"rule": "sgd", "kwargs": {"lr": 0.01}}
    for split in ("train", "val"):
        X, y = ds.raw(split)
        np.testing.assert_allclose(y, -0.01 * X[:, 0], rtol=1e-6, atol=0)
    # unit variance on the training rows; X_raw = X * x_scale
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0, rtol=1e-9)
    assert ds.y_train.std() == pytest.approx(1.0)
    assert ds.X_train.dtype == np.float64
    assert {r["status"] for r in ds.meta["runs"]} == {"ok"} and len(ds.meta["runs"]) == 2


def test_lag_zero_is_newest_against_hand_built_history(sgd_ds: SRDataset) -> None:
    """Replay run 0 with TeacherOptimizer and rebuild each row's history by hand."""
    run = sgd_ds.meta["runs"][0]
    optimizee = OPTIMIZEES.get("quadratic_cos")(seed=run["seed"])
    module = optimizee.module()
    opt = TeacherOptimizer(module.parameters(), TEACHERS.get("sgd")(lr=0.01))
    grads = []
    for _ in range(P1["steps"]):
        opt.zero_grad()
        optimizee.module_loss(module, None).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]).double().numpy().copy())
        opt.step()
    G = np.stack(grads)  # row s = gradient of step t = s + 1
    X, _ = sgd_ds.raw("train")
    rows = np.nonzero(sgd_ds.index_train[:, 0] == 0)[0]
    assert rows.size > 50
    for j in rows:
        _, t, coord = sgd_ds.index_train[j]
        assert t >= 20
        expected = [G[t - 1 - lag, coord] for lag in range(20)]
        np.testing.assert_allclose(X[j], expected, rtol=1e-6)


def test_feature_override_and_variable_subset() -> None:
    ds = collect(
        SGD,
        [P1],
        features=["g", "m09"],
        lags=5,
        n_samples=50,
        variables=["g_0", "g_1", "m09_0"],
        seeds_per_optimizee=1,
    )
    assert ds.names == ["g_0", "g_1", "m09_0"]
    assert ds.feature_spec["names"] == ["g", "m09"] and ds.feature_spec["lags"] == 5
    full = collect(SGD, [P1], features=["g", "m09"], lags=3, n_samples=20, seeds_per_optimizee=1)
    assert full.names == ["g_0", "g_1", "g_2", "m09_0", "m09_1", "m09_2"]  # feature-major, lag-minor


def test_adam_rule_uses_its_own_feature_constants() -> None:
    ds = collect({"rule": "adam", "kwargs": {"lr": 0.01}}, [P1], n_samples=100, seeds_per_optimizee=1)
    assert ds.feature_spec["names"] == ["m_hat"] and ds.feature_spec["beta2"] == 0.999
    X, y = ds.raw("train")
    np.testing.assert_allclose(y, -0.01 * X[:, 0], rtol=1e-6)


def test_bad_inputs_are_clear() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        collect({"rule": "sgd", "checkpoint": "x.pt"}, [P1])
    with pytest.raises(ValueError, match="10 steps < lags=20"):
        collect(SGD, [{"name": "quadratic_cos", "steps": 10}])
    with pytest.raises(KeyError, match="known teachers"):
        collect({"rule": "nope"}, [P1])
    with pytest.raises(ValueError, match="unknown optimizee spec keys"):
        collect(SGD, [{"name": "quadratic_cos", "step": 40}])
    with pytest.raises(ValueError, match="not produced"):
        collect(SGD, [P1], variables=["m_hat_0"])


def test_npz_round_trip(sgd_ds: SRDataset, tmp_path) -> None:
    path = sgd_ds.save(tmp_path / "ds.npz")
    with np.load(path, allow_pickle=False) as npz:  # no pickled objects inside
        assert json.loads(str(npz["metadata"]))["format"] == "symbolic-l2o/sr-dataset"
    back = SRDataset.load(path)
    for key in ("X_train", "y_train", "X_val", "y_val", "x_scale", "index_train", "index_val"):
        np.testing.assert_array_equal(getattr(back, key), getattr(sgd_ds, key))
    assert back.names == sgd_ds.names and back.y_scale == sgd_ds.y_scale
    assert back.feature_spec == sgd_ds.feature_spec and back.source == sgd_ds.source
    assert back.meta == json.loads(json.dumps(sgd_ds.meta))
    np.savez(tmp_path / "other.npz", X=np.zeros(3))
    with pytest.raises(ValueError, match="not an SR dataset"):
        SRDataset.load(tmp_path / "other.npz")


def test_unscale_equation_matches_on_raw_data(sgd_ds: SRDataset) -> None:
    eq = Equation.parse("0.7*g_0 - 1.3*tanh(0.5*g_2)*g_1 + exp(0.1*g_3) + sqrt(g_4)**2 - 0.2")
    raw = unscale_equation(eq, sgd_ds)
    X, _ = sgd_ds.raw("val")
    expected = eq.evaluate(sgd_ds.X_val, sgd_ds.names) * sgd_ds.y_scale
    np.testing.assert_allclose(raw.evaluate(X, sgd_ds.names), expected, rtol=1e-12, atol=1e-15)
    assert set(raw.variables) == set(eq.variables)


def test_collect_from_gradients_lags_and_targets() -> None:
    rng = np.random.default_rng(0)
    G = rng.normal(size=(50, 40)) * np.exp(rng.normal(size=40))
    ds = collect_from_gradients(G, lambda A: np.roll(A, 3, axis=0), lags=5, n_samples=200, holdout=0.5)
    assert ds.names == ["g_0", "g_1", "g_2", "g_3", "g_4"] and ds.n_train == 200 and ds.n_val == 100
    X, y = ds.raw("train")
    np.testing.assert_allclose(y, X[:, 3], rtol=1e-12)  # the target is g_{t-3}
    for j in range(10):
        _, t, c = ds.index_train[j]
        np.testing.assert_allclose(X[j], G[t - 1 - np.arange(5), c], rtol=1e-12)
    with pytest.raises(ValueError, match="must return"):
        collect_from_gradients(G, lambda A: A[:-1], lags=5)


def test_checkpoint_source_matches_rule(sgd_ds: SRDataset, tmp_path) -> None:
    from teachers.checkpoint import save_teacher

    path = save_teacher(TEACHERS.get("sgd")(lr=0.01), tmp_path / "sgd.pt")
    ds = collect({"checkpoint": str(path)}, [P1], n_samples=300, holdout=0.2, seed=0)
    assert ds.source == {"checkpoint": str(path), "teacher": "sgd", "kwargs": {"lr": 0.01}}
    np.testing.assert_array_equal(ds.X_train, sgd_ds.X_train)
    np.testing.assert_array_equal(ds.y_val, sgd_ds.y_val)


def test_epochs_budget() -> None:
    mlp = {"name": "mlp", "kwargs": {"hidden": [4], "batch_size": 512}, "epochs": 8, "label": "tiny"}
    ds = collect(SGD, [mlp], n_samples=50, seeds_per_optimizee=1)
    assert ds.meta["runs"][0]["steps"] == 8 * 3  # digits: 1437 training samples, 3 batches of 512
    with pytest.raises(ValueError, match="3 steps < lags=20"):
        collect(SGD, [{**mlp, "epochs": 1}])


def test_source_label_is_kept() -> None:
    ds = collect({**SGD, "label": "plain sgd"}, [P1], n_samples=20, seeds_per_optimizee=1)
    assert ds.source == {"rule": "sgd", "kwargs": {"lr": 0.01}, "label": "plain sgd"}
    with pytest.raises(ValueError, match="unknown collect source keys"):
        collect({**SGD, "lr": 0.1}, [P1])
