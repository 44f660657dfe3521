"""Smoke test of the Table-1 sanity benchmark: its targets, its inputs and one tiny SR run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from harness.stages.collect import collect_from_gradients
from harness.symbolic.lang import Equation

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "perf" / "sr_sanity.py"


@pytest.fixture(scope="module")
def sanity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sr_sanity", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grads() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 30))


def test_targets_match_torch_optimizers(sanity: ModuleType, grads: np.ndarray) -> None:
    _, adam = sanity.TARGETS["adam"]
    _, momentum = sanity.TARGETS["momentum"]
    p = torch.zeros(grads.shape[1], dtype=torch.float64, requires_grad=True)
    q = torch.zeros(grads.shape[1], dtype=torch.float64, requires_grad=True)
    opt_a = torch.optim.Adam([p], lr=1.0, betas=(0.9, 0.999), eps=1e-8)
    opt_m = torch.optim.SGD([q], lr=1.0, momentum=0.6)
    A, M = adam(grads), momentum(grads)
    for s in range(len(grads)):
        for par, opt, target in ((p, opt_a, A), (q, opt_m, M)):
            before = par.detach().clone()
            par.grad = torch.from_numpy(grads[s].copy())
            opt.step()
            np.testing.assert_allclose(-(par.detach() - before).numpy(), target[s], rtol=1e-10, atol=1e-12)


def test_adam_input_feature_is_the_target(sanity: ModuleType, grads: np.ndarray) -> None:
    """m_hat from harness.features (Adam's betas) is exactly the adam target: the SR may pick it."""
    features, variables, fkw = sanity.INPUTS["adam"]
    ds = collect_from_gradients(
        grads,
        sanity.TARGETS["adam"][1],
        sanity.LAGS,
        features,
        variables=variables,
        n_samples=100,
        feature_kwargs=fkw,
    )
    assert ds.names[-3:] == ["m_hat_0", "g_hat_0", "m09_0"] and len(ds.names) == 23
    X, y = ds.raw("train")
    np.testing.assert_allclose(y, X[:, ds.names.index("m_hat_0")], rtol=1e-9)


def test_display_drops_negligible_terms(sanity: ModuleType, grads: np.ndarray) -> None:
    names = ["g_0", "g_1"]
    X = grads[:, :2]
    eq = Equation.parse("1.0000001*g_0 + 1e-09*g_1 + 0.123456*g_1**2")
    text, r2 = sanity.display(eq, X, eq.evaluate(X, names), names)
    assert text == "g_0 + 0.123*g_1**2" and r2 > 0.9999


def test_sgd_target_end_to_end(sanity: ModuleType, grads: np.ndarray) -> None:
    pytest.importorskip("pyoperon")
    row = sanity.run_target("sgd", grads, n_samples=300)
    assert row["equation"] == "-0.01*g_0" and row["r2"] > 0.999999
    assert row["seconds"] > 0 and row["paper_r2"] == 1.0 and row["paper_seconds"] == 49.0
