"""numpy evaluation, compiled torch modules, and an independent sympy reference agree."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import sympy
import torch

from harness.symbolic.lang import Equation

_REF_MODULES = [
    {
        "ssqrt": lambda x: np.sign(x) * np.sqrt(np.abs(x)),
        "spow": lambda x, y: np.where(x == 0, 0.0, np.sign(x) * np.abs(x) ** y),
        "relu": lambda x: np.maximum(x, 0.0),
        "erfc": scipy.special.erfc,
    },
    "numpy",
]

EXPRESSIONS = [
    "sqrt(g_0) + pow(g_1, 0.7)*0.3 - 0.1",
    "pow(g_0, 1.5) - sqrt(g_1*g_2)",
    "exp(-g_0*0.5)*g_1**2/(1.5 + abs(g_2))",
    "erfc(g_0) + relu(g_1) + sign(g_2) + asinh(g_3) + sinh(g_0) + cos(g_1) + sin(g_2) + tanh(g_3)",
    "log(abs(g_0) + 0.1) + cube(g_1) - square(g_2)",
    "2**g_0 + (1/3)*g_1",
    "0.3*0.5*tanh(m_hat_0/0.5) - 0.01*g_hat_3",
]


def _data(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [f"g_{i}" for i in range(4)] + ["m_hat_0", "g_hat_3"]
    return {k: rng.normal(size=n) * 2 for k in names}


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_numpy_torch_and_sympy_agree(text: str) -> None:
    X = _data()
    eq = Equation.parse(text)
    a = eq.evaluate(X)
    module = eq.compile(dtype=torch.float64)
    b = module({k: torch.tensor(v) for k, v in X.items()}).detach().numpy()
    syms = [sympy.Symbol(v, real=True) for v in eq.variables] + list(eq.constant_symbols)
    ref_fn = sympy.lambdify(syms, eq.expr, modules=_REF_MODULES)
    with np.errstate(all="ignore"):
        c = np.broadcast_to(ref_fn(*[X[v] for v in eq.variables], *eq.constants), a.shape)
    assert a.dtype == np.float64 and a.shape == (64,)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_sign_extended_sqrt_and_pow_on_negatives() -> None:
    X = {"g_0": np.array([-4.0, 0.0, 9.0]), "g_1": np.array([-8.0, 0.0, 27.0])}
    eq = Equation.parse("sqrt(g_0)")
    np.testing.assert_allclose(eq.evaluate(X), [-2.0, 0.0, 3.0])
    p = Equation.parse("pow(g_1, 0.3333333333333333)")
    np.testing.assert_allclose(p.evaluate(X), [-2.0, 0.0, 3.0])
    assert Equation.parse("pow(g_0, -1.0)").evaluate(X)[1] == 0.0  # spow(0, y) = 0 by convention
    assert np.isnan(Equation.parse("g_0**0.5").evaluate(X)[0])  # the plain power is NaN there
    for e in (eq, p):
        t = e.compile(dtype=torch.float64)({k: torch.tensor(v) for k, v in X.items()})
        np.testing.assert_allclose(t.detach().numpy(), e.evaluate(X))


def test_one_parameter_per_constant_occurrence_and_gradients() -> None:
    eq = Equation.parse("0.5*g_0 + 0.5*g_1")
    module = eq.compile()
    params = list(module.parameters())
    assert len(params) == 2
    out = module(torch.ones(3), 2 * torch.ones(3))  # positional, in eq.variables order
    out.sum().backward()
    assert [float(p.grad) for p in params] == [3.0, 6.0]
    assert torch.allclose(module(g_0=torch.ones(2), g_1=torch.zeros(2)), torch.full((2,), 0.5))
    # gradient flows through sign-extended ops, and is finite at 0
    m = Equation.parse("0.7*sqrt(g_0) + pow(g_1, 0.5)*1.5").compile(dtype=torch.float64)
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    m({"g_0": x, "g_1": x}).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad) for p in m.parameters())
    assert torch.all(torch.isfinite(x.grad))


def test_training_a_compiled_equation_updates_constants() -> None:
    eq = Equation.parse("0.1*g_0 + 0.1*g_1")
    module = eq.compile(dtype=torch.float64)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x0, x1 = (torch.tensor(rng.normal(size=256)) for _ in range(2))
    target = -0.01 * x0 + 0.5 * x1
    for _ in range(300):
        opt.zero_grad()
        loss = ((module(x0, x1) - target) ** 2).mean()
        loss.backward()
        opt.step()
    tuned = module.to_equation()
    np.testing.assert_allclose(tuned.constants, [-0.01, 0.5], atol=1e-4)
    assert eq.constants == (0.1, 0.1)  # the original is untouched


def test_tie_groups_share_a_parameter() -> None:
    from harness.symbolic.sr.skeleton import tanh_sum_form

    eq, tie = tanh_sum_form(["g_0", "g_1", "m_hat_0"], gamma=0.5, weights={"g_0": 1.0})
    assert len(tie) == 1 and len(tie[0]) == 6  # gamma appears twice per term
    module = eq.compile(tie_groups=tie, dtype=torch.float64)
    assert len(list(module.parameters())) == 3 + 1
    slot = module._slot[tie[0][0]]
    with torch.no_grad():
        module.constants[slot].fill_(2.0)
    vals = module.constant_values()
    assert {vals[i] for i in tie[0]} == {2.0}
    untied = eq.compile()
    assert len(list(untied.parameters())) == eq.n_constants == 9


def test_evaluate_inputs_and_errors() -> None:
    eq = Equation.parse("0.5*g_0 - m_hat_1")
    X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_allclose(eq.evaluate(X, ["g_0", "zz_0", "m_hat_1"]), [0.5 - 3.0, 2.0 - 6.0])
    with pytest.raises(KeyError, match="m_hat_1"):
        eq.evaluate({"g_0": np.ones(2)})
    with pytest.raises(ValueError):
        eq.evaluate(X)  # no names
    assert Equation.parse("0.5").evaluate({"g_0": np.ones(5)}).shape == (5,)
    assert np.isinf(Equation.parse("1/g_0").evaluate({"g_0": np.zeros(1)})[0])


def test_equations_and_modules_pickle() -> None:
    import pickle

    eq = Equation.parse("0.5*sqrt(g_0) + pow(g_1, 0.3)", metrics={"r2_train": 0.5}, provenance={"seed": 1})
    eq.evaluate({"g_0": np.ones(2), "g_1": np.ones(2)})  # fills the closure cache
    back = pickle.loads(pickle.dumps(eq))
    assert back == eq and back.constants == eq.constants and back.metrics == eq.metrics
    module = eq.compile(dtype=torch.float64)
    with torch.no_grad():
        module.constants[0].fill_(2.0)
    clone = pickle.loads(pickle.dumps(module))
    x = torch.ones(3, dtype=torch.float64)
    assert torch.equal(clone(x, x), module(x, x)) and clone.constant_values()[0] == 2.0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("sqrt(2)", 2**0.5),
        ("sqrt(-4)", -2.0),
        ("pow(-8, 1/3)", -2.0),
        ("pow(0, -1)", 0.0),
        ("relu(-2)", 0.0),
        ("relu(3)", 3.0),
    ],
)
def test_grammar_functions_of_structural_numbers_are_numbers(text: str, value: float) -> None:
    """``sqrt(2)`` was refused as "a non-real number" (sympy could not evaluate the sign-extended functions);
    now it is a number, the same one the numpy and torch lowerings compute, and folds like ``exp(2)``."""
    eq = Equation.parse(f"{text}*g_0")
    X = {"g_0": np.array([1.0, -2.0])}
    np.testing.assert_allclose(eq.evaluate(X), [value, -2 * value], rtol=1e-15, atol=0)
    t = eq.compile(dtype=torch.float64)({"g_0": torch.tensor(X["g_0"])})
    np.testing.assert_allclose(t.detach().numpy(), [value, -2 * value], rtol=1e-15, atol=0)
    folded = Equation.parse(f"1.0*{text}*g_0").fold_constants()
    assert folded.n_constants == 1 and folded.constants[0] == pytest.approx(value, abs=1e-15)


def test_folding_keeps_an_undefined_constant_part_as_written() -> None:
    """``log(0.5 - 0.5)`` has no real value: folding keeps it (its inside folded) instead of raising TypeError,
    and the folded equation computes what the original does."""
    eq = Equation.parse("g_0*log(0.5 - 0.5) + g_0*(2.0*3.0) + sqrt(0.5)*g_1")
    folded = eq.fold_constants()
    assert folded.text == "6.0*g_0 + 0.7071067811865476*g_1 + g_0*log(0.0)"
    X = {"g_0": np.array([0.0, 1.0]), "g_1": np.array([2.0, 3.0])}
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(folded.evaluate(X), eq.evaluate(X))


def test_latex_of_powers_of_grammar_functions_and_of_undefined_parts() -> None:
    """sympy hands the exponent of ``f(x)**n`` to ``f``'s printer (ours raised TypeError); a part that is
    undefined once constants are numbers (``1/log(cos(0.0))``) raised ZeroDivisionError in sympy's printer."""
    assert Equation.parse("sqrt(g_0)**3").latex() == (
        r"\left(\operatorname{sgn}\left(\mathit{g}_{t}\right)\sqrt{\left|\mathit{g}_{t}\right|}\right)^{3}"
    )
    found_by_fuzzing = (
        "cos(cos(2)) / ((sinh((g_0 - 1.3)) * 1.3) * sinh(((((sinh((g_1 * g_1)) / log(cos(0.5 - 0.5)))) ** 3 / "
        "log((0.5 + (exp(m_hat_0) * m_hat_0)))) - (((((g_1 + 2) / erfc(g_0)) * (sqrt(2) - g_1))) ** 3 + "
        "relu(sqrt(0.5))))))"
    )
    tex = Equation.parse(found_by_fuzzing).latex()
    assert r"\log{\left(\cos{\left(0.5 - 0.5 \right)} \right)}" in tex  # constants by name: see latex()
    assert "tanh" in Equation.parse("tanh(asinh(g_0))").latex()  # as written, not rewritten by sympy
