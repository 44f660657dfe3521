"""PySR backend: kwargs mapping and availability without Julia; a real fit only where Julia is present."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys

import numpy as np
import pytest

from harness.symbolic.equation import relu, spow, ssqrt
from harness.symbolic.sr import SRSettings
from harness.symbolic.sr.pysr import PySRBackend, pysr_kwargs


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
