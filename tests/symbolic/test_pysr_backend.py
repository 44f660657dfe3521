"""PySR backend: kwargs mapping and availability without Julia; a real fit only where Julia is present."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys

import numpy as np
import pytest

from harness.symbolic.lang import import_hall_of_fame, relu, spow, ssqrt
from harness.symbolic.sr import SRSettings
from harness.symbolic.sr.offset import value_at_zero
from harness.symbolic.sr.pysr import ZERO_ANCHORED_LOSS, PySRBackend, hall_of_fame_front, pysr_kwargs


def test_pysr_kwargs_mapping() -> None:
    s = SRSettings(
        operators=[
            "add",
            "sub",
            "mul",
            "div",
            "pow",
            "square",
            "sqrt",
            "exp",
            "tanh",
            "asinh",
            "relu",
            "erfc",
        ],
        max_complexity=5,
        population_size=33,
        iterations=12,
        seed=4,
        max_time_s=30,
        optimizer_iterations=7,
    )
    kw = pysr_kwargs(s)
    assert kw["binary_operators"][:4] == ["+", "-", "*", "/"]
    assert (
        kw["binary_operators"][4].startswith("spow(x, y) =")
        and "sign(x) * abs(x)^y" in kw["binary_operators"][4]
    )
    assert kw["unary_operators"][0] == "square"
    assert "ssqrt(x) = sign(x) * sqrt(abs(x))" in kw["unary_operators"]
    assert {"exp", "tanh", "asinh", "relu", "erfc"} <= set(kw["unary_operators"])
    assert kw["extra_sympy_mappings"] == {"ssqrt": ssqrt, "spow": spow, "relu": relu}
    assert (kw["niterations"], kw["population_size"], kw["maxsize"], kw["random_state"]) == (12, 33, 7, 4)
    assert kw["deterministic"] is True and kw["parallelism"] == "serial"
    assert kw["timeout_in_seconds"] == 30.0 and kw["optimizer_iterations"] == 7
    assert kw["should_optimize_constants"] is True
    threaded = pysr_kwargs(SRSettings(threads=4, extra={"populations": 8}))
    assert threaded["parallelism"] == "multithreading" and threaded["procs"] == 4
    assert threaded["deterministic"] is False and threaded["populations"] == 8
    with pytest.raises(ValueError, match="binary"):
        pysr_kwargs(SRSettings(operators=["exp", "tanh"]))


def test_available_never_raises(monkeypatch) -> None:
    monkeypatch.setattr(PySRBackend, "_status", None)
    ok, why = PySRBackend().available()
    assert isinstance(ok, bool) and (ok or why)
    # pysr "installed" and Julia "present", but importing pysr blows up with a non-ImportError
    monkeypatch.setattr(PySRBackend, "_status", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "pysr" else None)
    monkeypatch.setattr(shutil, "which", lambda name: sys.executable)
    monkeypatch.delenv("PYTHON_JULIAPKG_EXE", raising=False)
    real_import = importlib.import_module

    def boom(name, *a, **k):
        if name == "pysr":
            raise RuntimeError("juliacall: Julia could not be downloaded")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", boom)
    ok, why = PySRBackend._probe()
    assert ok is False and "RuntimeError" in why and "Julia could not be downloaded" in why
    # Julia absent
    monkeypatch.setattr(shutil, "which", lambda name: None)
    ok, why = PySRBackend._probe()
    assert ok is False and "Julia was not found" in why


def test_fit_refuses_cleanly_when_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(PySRBackend, "_status", (False, "no Julia here"))
    with pytest.raises(RuntimeError, match="no Julia here"):
        PySRBackend().fit(np.zeros((4, 1)), np.zeros(4), ["g_0"], SRSettings())


def test_real_pysr_fit() -> None:
    ok, why = PySRBackend().available()
    if not ok:
        pytest.skip(f"pysr backend unavailable: {why}")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = -0.01 * X[:, 0]
    settings = SRSettings(
        operators=["add", "mul", "sub"], iterations=5, population_size=20, max_complexity=10
    )
    front = PySRBackend().fit(X, y, ["g_0", "g_1"], settings)
    assert front.best().metrics["r2_train"] > 0.999


def test_no_offset_objective_in_pysr_options() -> None:
    """By default PySR searches with the zero-anchored objective; a setting or a user objective turns it off."""
    kw = pysr_kwargs(SRSettings())
    assert kw["loss_function"] == ZERO_ANCHORED_LOSS
    assert "elementwise_loss" not in kw
    # the Julia objective: MSE of f(x) - f(0), f also evaluated on one all-zero column
    assert "zeros(T, size(dataset.X, 1), 1)" in ZERO_ANCHORED_LOSS
    assert "prediction .- at_zero[1] .- dataset.y" in ZERO_ANCHORED_LOSS
    assert "loss_function" not in pysr_kwargs(SRSettings(allow_offset=True))
    mine = "loss(p, t) = abs(p - t)"
    own = pysr_kwargs(SRSettings(extra={"elementwise_loss": mine}))
    assert own["elementwise_loss"] == mine and "loss_function" not in own
    assert "loss_function" not in pysr_kwargs(SRSettings(extra={"batching": True}))


def test_hall_of_fame_post_processing_without_julia() -> None:
    """What PySR returns goes through the same no-offset rule, fit and complexity checks as Operon's front."""
    rng = np.random.default_rng(0)
    names = ["m_hat_0", "g_hat_0"]
    X = rng.normal(size=(300, 2))
    y = -0.01 * X[:, 0] + 0.003
    rows = [
        {"Complexity": 1, "Loss": 1e-4, "Equation": "0.003"},
        {"Complexity": 3, "Loss": 9e-6, "Equation": "x0 * -0.01"},
        {"Complexity": 5, "Loss": 1e-12, "Equation": "(x0 * -0.01) + 0.003"},
        {"Complexity": 7, "Loss": 1e-12, "Equation": "((x0 + -0.3) * -0.01)"},
        {"Complexity": 8, "Loss": 1e-12, "Equation": "tanh((x0 * -0.01) + 0.003) + (x1 * 1e-9)"},
        {"Complexity": 9, "Loss": 1e-12, "Equation": "(x0 * -0.01) + 0.003 + x1 * x1 * x1 * x1 * 1e-9"},
    ]
    imported = import_hall_of_fame(rows, names)
    front = hall_of_fame_front(
        imported.equations, X, y, names, SRSettings(max_complexity=8), {"backend": "pysr"}
    )
    assert len(front) >= 1
    for eq in front:
        assert value_at_zero(eq) == 0.0 and eq.complexity <= 8
        assert set(eq.metrics) == {"r2_train", "mse_train"}
        assert eq.metrics["r2_train"] == eq.score(X, y, names).metrics["r2_train"]
        assert "pysr_loss" in eq.provenance and "pysr_complexity" in eq.provenance
    assert front.complexities == [e.complexity for e in front]
    assert front.provenance["left_out"]["over_max_complexity"] >= 1
    allowed = hall_of_fame_front(
        imported.equations, X, y, names, SRSettings(max_complexity=8, allow_offset=True), {"backend": "pysr"}
    )
    assert value_at_zero(allowed.best()) == pytest.approx(0.003)
    assert allowed.best().metrics["r2_train"] == pytest.approx(1.0)
