"""SR backends: registry, settings, Operon tree conversion and fits, skeleton (eq. 6) and linear fits."""

from __future__ import annotations

import numpy as np
import pytest

from harness.registry import SR_BACKENDS
from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.sr import SRBackend, SRSettings, get_backend
from harness.symbolic.sr.base import check_fit_inputs
from harness.symbolic.sr.skeleton import fit_constants, tanh_sum_form, tanh_sum_parameters


def test_registry_has_builtins_as_classes() -> None:
    assert {"operon", "pysr", "skeleton", "linear"} <= set(SR_BACKENDS.names())
    for name in ("operon", "pysr", "skeleton", "linear"):
        backend = get_backend(name)
        assert isinstance(backend, SRBackend) and backend.name == name
        ok, why = backend.available()
        assert isinstance(ok, bool) and isinstance(why, str) and (ok or why)


def test_settings_validation() -> None:
    s = SRSettings(operators=["+", "*", "ssqrt", "tanh"])
    assert s.operators == ["add", "mul", "sqrt", "tanh"]
    with pytest.raises(ValueError, match="unknown operator 'gamma'"):
        SRSettings(operators=["add", "gamma"])
    with pytest.raises(ValueError):
        SRSettings(population_size=0)
    with pytest.raises(ValueError, match="unknown SR settings"):
        SRSettings.from_dict({"populaton_size": 3})
    assert SRSettings.from_dict(SRSettings(seed=3).to_dict()) == SRSettings(seed=3)
    with pytest.raises(ValueError, match="feature_lag"):
        check_fit_inputs(np.zeros((3, 1)), np.zeros(3), ["x0"])
    with pytest.raises(ValueError, match="finite"):
        check_fit_inputs(np.full((3, 1), np.nan), np.zeros(3), ["g_0"])


# ---------------------------------------------------------------- operon

op = pytest.importorskip("pyoperon")


def _operon_dataset(X: np.ndarray):
    ds = op.Dataset(np.asfortranarray(np.column_stack([X, np.zeros(len(X))])))
    return ds, sorted(ds.Variables, key=lambda v: v.Index)


def _var(vs, i: int, w: float = 1.0):
    n = op.Node.Variable(w)
    n.HashValue = vs[i].Hash
    return n


def _trees(vs):
    T = op.NodeType
    a, b, p = (lambda w=1.0, i=i: _var(vs, i, w) for i in range(3))  # p is a positive column
    c = op.Node.Constant
    return {
        "sub (b - a)": [a(), b(), op.Node(T.Sub)],
        "div (b / a)": [a(), b(1.5), op.Node(T.Div)],
        "weights": [a(2.5), c(0.125), op.Node(T.Add)],
        "square": [a(0.7), op.Node(T.Square)],
        "sqrtabs": [a(), op.Node(T.Sqrtabs)],
        "sqrt (positive)": [p(), op.Node(T.Sqrt)],
        "powabs": [b(0.5), a(), op.Node(T.Powabs)],
        "pow": [c(2.0), a(), op.Node(T.Pow)],
        "exp": [a(0.3), op.Node(T.Exp)],
        "log (positive)": [p(), op.Node(T.Log)],
        "logabs": [a(), op.Node(T.Logabs)],
        "tanh*sinh": [a(), op.Node(T.Tanh), b(), op.Node(T.Sinh), op.Node(T.Mul)],
        "cos-sin": [a(), op.Node(T.Cos), b(), op.Node(T.Sin), op.Node(T.Sub)],
        "abs": [a(-1.25), op.Node(T.Abs)],
        "cbrt": [a(), op.Node(T.Cbrt)],
        "aq": [b(), a(), op.Node(T.Aq)],
        "nested": [a(), b(), op.Node(T.Mul), c(-0.01), op.Node(T.Mul), c(3e-9), op.Node(T.Add)],
    }


def test_operon_tree_conversion_matches_operon_evaluation() -> None:
    from harness.symbolic.sr.operon import tree_to_equation

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    X[:, 2] = np.abs(X[:, 2]) + 0.1
    ds, vs = _operon_dataset(X)
    names = ["g_0", "m_hat_1", "v_0"]
    by_hash = {v.Hash: names[i] for i, v in enumerate(vs) if i < 3}
    dt, rg = op.DispatchTable(), op.Range(0, len(X))
    for label, nodes in _trees(vs).items():
        tree = op.Tree(nodes).UpdateNodes()
        theirs = np.asarray(op.Evaluate(dt, tree, ds, rg), dtype=np.float64).ravel()
        eq = tree_to_equation(tree, by_hash)
        ours = eq.evaluate(X, names)
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-6, err_msg=f"{label}: {eq}")
    # small constants survive (the printed model string would round them to 0)
    tree = op.Tree(_trees(vs)["nested"]).UpdateNodes()
    assert 3e-9 in tree_to_equation(tree, by_hash).constants


def test_operon_operator_mapping() -> None:
    from harness.symbolic.sr.operon import OperonBackend, operon_symbols

    assert operon_symbols(["add", "sqrt", "pow", "tanh"]) == "add,sqrtabs,powabs,tanh,constant,variable"
    with pytest.raises(ValueError, match="asinh, relu, erfc"):
        operon_symbols(["add", "asinh", "relu", "erfc"])
    X, y = np.zeros((10, 1)), np.zeros(10)
    with pytest.raises(ValueError, match="sign"):
        OperonBackend().fit(X, y, ["g_0"], SRSettings(operators=["add", "sign"]))
    kw = OperonBackend().regressor_kwargs(
        SRSettings(seed=7, threads=2, max_time_s=1.5, extra={"max_depth": 7})
    )
    assert kw["objectives"] == ["r2", "length"] and kw["optimizer_iterations"] > 0
    assert (kw["random_state"], kw["n_threads"], kw["max_time"], kw["max_depth"]) == (7, 2, 2, 7)
    with pytest.raises(ValueError, match="unknown pyoperon options"):
        OperonBackend().regressor_kwargs(SRSettings(extra={"max_dept": 7}))


def test_operon_recovers_scaled_gradient() -> None:
    rng = np.random.default_rng(0)
    names = [f"g_{i}" for i in range(5)] + ["m_hat_0"]
    X = rng.normal(size=(1000, len(names)))
    y = -0.01 * X[:, 0]
    settings = SRSettings(population_size=50, iterations=10, max_complexity=15, seed=1)
    front = get_backend("operon").fit(X, y, names, settings)
    assert isinstance(front, ParetoFront) and len(front) >= 1
    best = front.best()
    assert best.metrics["r2_train"] > 0.999
    assert best.variables == ("g_0",)
    assert best.evaluate(X, names) == pytest.approx(y, abs=1e-8)
    assert front.provenance["backend"] == "operon" and best.provenance["seed"] == 1
    # same seed, same front
    again = get_backend("operon").fit(X, y, names, settings)
    assert [e.text for e in again] == [e.text for e in front]


# ---------------------------------------------------------------- skeleton and linear


def test_skeleton_recovers_eq6_weights_and_gamma() -> None:
    rng = np.random.default_rng(0)
    names = [f"{f}_{t}" for f in ("m_hat", "g_hat", "m09") for t in range(3)]
    X = rng.normal(size=(1500, len(names))) * 2
    W = rng.normal(size=len(names))
    gamma = 0.3
    y = (W * gamma * np.tanh(X / gamma)).sum(axis=1)
    settings = SRSettings(max_complexity=80, extra={"form": "eq6", "gamma": 1.0})
    front = get_backend("skeleton").fit(X, y, names, settings)
    (eq,) = front.equations
    assert eq.complexity == 80
    weights, g = tanh_sum_parameters(eq)
    assert g == pytest.approx(gamma, rel=1e-6)
    np.testing.assert_allclose([weights[n] for n in names], W, rtol=1e-6)
    assert eq.metrics["r2_train"] > 1 - 1e-10


def test_fit_constants_linear_form_is_exact_and_tied_form_works() -> None:
    rng = np.random.default_rng(1)
    X = {"g_0": rng.normal(size=300), "g_1": rng.normal(size=300)}
    y = 2 * X["g_0"] - 3 * np.exp(0.7 * X["g_1"]) + 0.1
    # linear in 3 constants, nonlinear in the exponent's
    fitted = fit_constants(Equation.parse("1.0*g_0 + 1.0*exp(g_1*0.5) + 1.0"), X, y)
    assert fitted.score(X, y).metrics["r2_train"] == pytest.approx(1.0, abs=1e-12)
    assert sorted(round(c, 9) for c in fitted.constants) == [-3.0, 0.1, 0.7, 2.0]
    form, tie = tanh_sum_form(["g_0", "g_1"], gamma=2.0)
    y2 = 0.5 * 0.4 * np.tanh(X["g_0"] / 0.4) - 1.5 * 0.4 * np.tanh(X["g_1"] / 0.4)
    w, g = tanh_sum_parameters(fit_constants(form, X, y2, tie_groups=tie))
    assert abs(g) == pytest.approx(0.4, rel=1e-6)  # W*gamma*tanh(x/gamma) is even in gamma
    assert (w["g_0"], w["g_1"]) == pytest.approx((0.5, -1.5), rel=1e-6)


def test_skeleton_with_text_form() -> None:
    rng = np.random.default_rng(2)
    names = ["g_0", "g_1"]
    X = rng.normal(size=(200, 2))
    y = 0.25 * X[:, 0] * X[:, 1] - 0.05
    form = {"form": "1.0*g_0*g_1 + 1.0"}
    front = get_backend("skeleton").fit(X, y, names, SRSettings(allow_offset=True, extra=form))
    assert front[0].constants == pytest.approx((0.25, -0.05))
    with pytest.raises(ValueError):
        get_backend("skeleton").fit(X, y, names, SRSettings(extra={"form": "1.0*g_7"}))


def test_linear_backend_exact_on_linear_data() -> None:
    rng = np.random.default_rng(3)
    names = [f"g_{i}" for i in range(6)] + ["m_hat_0", "m_hat_1"]
    X = rng.normal(size=(500, len(names)))
    coef = np.array([1.0, -0.5, 0.25, 0.0, 2.0, -1.0, 0.3, 0.0])
    y = X @ coef + 0.01
    front = get_backend("linear").fit(X, y, names, SRSettings(max_complexity=100, allow_offset=True))
    best = front.best()
    assert best.metrics["r2_train"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(best.evaluate(X, names), y, atol=1e-10)
    # nested models: complexity grows, error falls; the first non-trivial one uses the biggest term
    assert front.complexities == sorted(front.complexities)
    assert any(e.variables == ("g_4",) for e in front)
    small = get_backend("linear").fit(X, y, names, SRSettings(max_complexity=10, allow_offset=True))
    assert max(small.complexities) <= 10
    # by default through the origin: exact on data without an offset
    front = get_backend("linear").fit(X, y - 0.01, names, SRSettings(max_complexity=100))
    np.testing.assert_allclose(front.best().evaluate(X, names), y - 0.01, atol=1e-10)
