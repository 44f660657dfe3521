"""Safe parser, canonical text, JSON round trips, hall-of-fame import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy

from harness.symbolic.lang import (
    MAX_TEXT_LENGTH,
    Equation,
    EquationParseError,
    ParetoFront,
    import_hall_of_fame,
    split_variable,
    ssqrt,
)

HOSTILE = [
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "g_0.real",
    "__import__('os')",
    "__import__('os').system('true')",
    "eval('1')",
    "exec('x=1')",
    "open('/etc/passwd')",
    "__builtins__",
    "__a_0",
    "g__0_1",
    "lambda: 1",
    "(lambda x: x)(g_0)",
    "[x for x in g_0]",
    "{x for x in g_0}",
    "{x: 1 for x in g_0}",
    "(x for x in g_0)",
    "foo(g_0)",
    "exp(x=g_0)",
    "exp(*g_0)",
    "exp(**g_0)",
    "pow(g_0)",
    "exp(g_0, g_1)",
    "g_0[0]",
    "g_0[1:2]",
    "'abc'",
    "b'abc'",
    "f'{g_0}'",
    "g_0 + 'a'",
    "[g_0]",
    "(g_0, g_1)",
    "{g_0}",
    "{'a': g_0}",
    "None",
    "True * g_0",
    "1j * g_0",
    "...",
    "g_0 if g_1 else g_2",
    "g_0 < g_1",
    "g_0 and g_1",
    "not g_0",
    "~g_0",
    "g_0 ^ g_1",
    "g_0 @ g_1",
    "g_0 // 2",
    "g_0 % 2",
    "g_0 << 1",
    "g_0 | g_1",
    "(y_0 := 1)",
    "await g_0",
    "yield g_0",
    "import os",
    "g_0; g_1",
    "g_0\x00",
    "9**9**9",
    "10**10**10",
    "2**4000",
    "(10**15)**100",
    "g_0**1e10",
    "g_0**-1000.0",
    "pow(g_0, 1e3)",
    "1e999 * g_0",
    "1" + "0" * 40 + " * g_0",
    "1/0",
    "g_0/(1 - 1)",
    "log(0)",
    "0**-1",
    "(-8)**(1/3)",
    "x",
    "exp",
    "g_00",
    "g_-1",
    "c0",
    "",
    "   ",
    "g_0" + "+g_0" * (MAX_TEXT_LENGTH // 4),
    "exp(" * 150 + "g_0" + ")" * 150,
    "-" * 5000 + "g_0",
    "(" * 300 + "g_0" + ")" * 300,
    "+".join(["g_0"] * 4000),
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t)[:40])
def test_parser_refuses_hostile_input(text: str) -> None:
    with pytest.raises(EquationParseError):
        Equation.parse(text)


def test_parse_error_is_value_error_and_non_str_refused() -> None:
    assert issubclass(EquationParseError, ValueError)
    for bad in (None, b"g_0", 3, ["g_0"]):
        with pytest.raises(EquationParseError):
            Equation.parse(bad)  # type: ignore[arg-type]


def test_allowed_variables_and_name_map() -> None:
    Equation.parse("g_0 + m_hat_1", allowed_variables={"g_0", "m_hat_1"})
    with pytest.raises(EquationParseError, match="unknown variable 'g_1'"):
        Equation.parse("g_0 + g_1", allowed_variables={"g_0"})
    eq = Equation.parse("x0 * 2.0 + x1", name_map={"x0": "g_0", "x1": "m_hat_3"})
    assert eq.variables == ("g_0", "m_hat_3")


ONE_PER_OPERATOR = [
    "g_0 + g_1",
    "g_0 - g_1",
    "g_0 * g_1",
    "g_0 / g_1",
    "g_0**2",
    "g_0**(1/2)",
    "g_0**0.7",
    "-g_0",
    "+g_0",
    "square(g_0)",
    "cube(g_0)",
    "sqrt(g_0)",
    "ssqrt(g_0)",
    "pow(g_0, 0.5)",
    "spow(g_0, 1.5)",
    "exp(g_0)",
    "log(abs(g_0))",
    "tanh(g_0)",
    "asinh(g_0)",
    "sinh(g_0)",
    "relu(g_0)",
    "erfc(g_0)",
    "abs(g_0)",
    "sign(g_0)",
    "cos(g_0)",
    "sin(g_0)",
    "-0.01*g_0",
    "-(0.5*g_0)",
    "-(0.5)",
    "-(0.5*0.3)",
    "g_0 - 0.5",
    "g_0 + -0.5",
    "-0.5 - g_0",
    "g_0 - -0.5*g_1",
    "(-0.5)**g_0",
    "g_0/-0.5",
    "1/(2*g_0)",
    "2*g_0/3",
    "exp(1)*g_0",
    "1e-05*g_0 + 1e+16",
    "-(g_0 + g_1)*g_2",
    "0.3*0.5*tanh(m_hat_0/0.5) - 0.01*g_hat_3 + m09_1**2/(1.5 + abs(g_0))",
    "pow(m_hat_3, -1) + exp(-(0.5*g_0))",
]


@pytest.mark.parametrize("text", ONE_PER_OPERATOR)
def test_round_trip_text_and_json(text: str, tmp_path) -> None:
    eq = Equation.parse(text, metrics={"r2_train": 0.5}, provenance={"backend": "test"})
    again = Equation.parse(str(eq))
    assert again == eq
    assert again.expr == eq.expr
    assert again.constants == eq.constants
    assert str(again) == str(eq)
    data = json.loads(json.dumps(eq.to_json()))
    back = Equation.from_json(data)
    assert back == eq and back.constants == eq.constants and back.expr == eq.expr
    assert back.metrics == {"r2_train": 0.5} and back.provenance == {"backend": "test"}
    path = eq.save(tmp_path / "eq.json")
    loaded = Equation.load(path)
    assert loaded == eq and loaded.complexity == eq.complexity


def test_constants_one_per_occurrence_and_canonical_order() -> None:
    eq = Equation.parse("0.5*g_0 + 0.5*g_1")
    assert eq.n_constants == 2 and eq.constants == (0.5, 0.5)
    assert eq.template == "c0*g_0 + c1*g_1"
    # same constant twice on the same variable stays two constants (never tied)
    assert Equation.parse("0.1*g_0 + 0.1*g_0").n_constants == 2
    # integer literals are structural, floats are constants
    assert Equation.parse("2*g_0**2").n_constants == 0
    assert Equation.parse("2.0*g_0**2.0").n_constants == 2
    # order of terms in the input does not matter
    assert Equation.parse("0.2*g_1 + 0.1*g_0") == Equation.parse("0.1*g_0 + 0.2*g_1")


def test_complexity_and_variables() -> None:
    assert Equation.parse("-0.01*g_0").complexity == 3
    assert Equation.parse("g_0 - g_1").complexity == 3
    assert Equation.parse("tanh(g_0)").complexity == 2
    eq = Equation.parse("0.1*m_hat_3 + g_hat_0*m_hat_0 - g_2*0.5")
    assert eq.variables == ("g_2", "g_hat_0", "m_hat_0", "m_hat_3")
    assert eq.features_used() == ["g", "g_hat", "m_hat"]
    assert eq.lags_used() == {"g": [2], "g_hat": [0], "m_hat": [0, 3]}
    assert eq.max_lag("m_hat") == 3 and eq.max_lag("absent") == -1
    assert split_variable("m_hat_12") == ("m_hat", 12)
    with pytest.raises(ValueError):
        split_variable("m_hat")


def test_from_sympy_pulls_floats_out() -> None:
    g0, g1 = sympy.symbols("g_0 g_1")
    eq = Equation.from_sympy(-0.01 * g0 + 2 * g1**2 + sympy.Float(0.5) * ssqrt(g0))
    assert sorted(eq.constants) == [-0.01, 0.5]
    assert eq == Equation.parse("-0.01*g_0 + 2*g_1**2 + 0.5*sqrt(g_0)")
    x = sympy.Symbol("x0")
    assert Equation.from_sympy(3.0 * x, name_map={"x0": "g_4"}).variables == ("g_4",)
    with pytest.raises(ValueError):
        Equation.from_sympy(sympy.Symbol("nope") + 1)


def test_with_constants_and_fold() -> None:
    eq = Equation.parse("0.5*g_0 + 0.5*g_1")
    eq2 = eq.with_constants([1.0, -2.0])
    assert eq2.constants == (1.0, -2.0) and eq.constants == (0.5, 0.5)
    with pytest.raises(ValueError):
        eq.with_constants([1.0])
    folded = Equation.parse("0.5*(2.0*g_0) + 1.0 + 2.0*3.0").fold_constants()
    assert folded.n_constants == 2
    assert folded == Equation.parse("1.0*g_0 + 7.0")


def test_json_refuses_code_and_mismatches() -> None:
    good = Equation.parse("0.5*g_0").to_json()
    with pytest.raises(EquationParseError):
        Equation.from_json({**good, "expression": "__import__('os').system('true')"})
    with pytest.raises(EquationParseError):
        Equation.from_json({**good, "expression": "0.5*g_1"})  # g_1 not among listed variables
    with pytest.raises(EquationParseError):
        Equation.from_json({**good, "constants": [0.5, 1.0]})
    with pytest.raises(EquationParseError):
        Equation.from_json({**good, "variables": [{"name": "g_0", "feature": "m", "lag": 0}]})
    with pytest.raises(EquationParseError):
        Equation.from_json("{not json")
    # constants listed in JSON override the inline ones (exact float64)
    assert Equation.from_json({**good, "constants": [0.25]}).constants == (0.25,)


def test_latex_mentions_lags() -> None:
    tex = Equation.parse("0.5*m_hat_3 + sqrt(g_0)").latex()
    assert "t-3" in tex and r"\sqrt" in tex


HOF = """Complexity,Loss,Equation
1,0.25,"0.013"
3,0.01,"x0 * -0.0099999"
5,0.001,"(x0 * -0.01) + square(x1)"
6,0.0009,"ssqrt(x0) - spow(x1, 2.0)"
7,0.0008,"(x1 ^ 2.0) + sqrt(x0 * 1.0e-5)"
8,0.0007,"x0 * Inf"
"""


def test_hall_of_fame_import(tmp_path) -> None:
    path = tmp_path / "hall_of_fame.csv"
    path.write_text(HOF)
    with pytest.warns(UserWarning, match="skipped 1"):
        front = import_hall_of_fame(path, names=["g_0", "m_hat_1"])
    assert isinstance(front, ParetoFront)
    texts = {e.text for e in front}
    assert "-0.0099999*g_0" in texts
    assert Equation.parse("-0.01*g_0 + m_hat_1**2") in front.equations
    assert Equation.parse("sqrt(g_0) - pow(m_hat_1, 2.0)") in front.equations
    assert Equation.parse("m_hat_1**2.0 + sqrt(1e-05*g_0)") in front.equations
    assert front.provenance["skipped"] == 1
    assert all(e.metrics["loss"] > 0 for e in front)
    # the same from CSV text and from rows
    with pytest.warns(UserWarning):
        assert len(import_hall_of_fame(HOF, names=["g_0", "m_hat_1"])) == len(front)
    rows = [{"complexity": 3, "loss": 0.1, "equation": "x0 * 2.0"}]
    assert import_hall_of_fame(rows, names=["g_7"])[0] == Equation.parse("2.0*g_7")


def test_with_constants_is_index_stable() -> None:
    """Constant i stays constant i whatever the new values (tie groups and meta-tuning rely on it)."""
    eq = Equation.parse("0.3*tanh(g_0/0.4)*0.1 + 0.3*tanh(g_1/0.4)*0.2 + 0.5*g_0 + 0.5*g_0 + 0.1*g_0*g_1")
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = [float(v) for v in rng.uniform(-3, 3, size=eq.n_constants)]
        new = eq.with_constants(values)
        assert list(new.constants) == values and new.template == eq.template
        assert Equation.parse(str(new)) == new


def test_lags_are_bounded_by_max_lag() -> None:
    """A variable's lag sizes the history a consumer keeps: at most harness.features.MAX_LAG."""
    from harness.features import MAX_LAG, FeatureSpec, is_variable_name, parse_variable, variable_name

    assert MAX_LAG == 1000
    assert parse_variable("m_hat_1000") == ("m_hat", 1000) and is_variable_name("g_1000")
    for bad in ("g_1001", "g_999999999999", "g_" + "9" * 5000):
        assert not is_variable_name(bad)
        with pytest.raises(ValueError, match="over the maximum lag 1000"):
            parse_variable(bad)
        with pytest.raises(EquationParseError, match="over the maximum lag 1000"):
            Equation.parse(f"0.1*{bad}")
    with pytest.raises(ValueError, match=r"lag must be in 0\.\.1000"):
        variable_name("g", 1001)
    assert FeatureSpec(("g",), lags=MAX_LAG + 1).variable_names()[-1] == "g_1000"
    with pytest.raises(ValueError, match=r"lags must be in 1\.\.1001"):
        FeatureSpec(("g",), lags=MAX_LAG + 2)
    assert Equation.parse("0.1*g_1000").lags_used() == {"g": [1000]}


def test_equation_json_fields_are_type_checked(tmp_path) -> None:
    good = {"expression": "0.5*g_0", "constants": [0.25], "metrics": {"r2_val": 0.9, "loss": None}}
    eq = Equation.from_json(good)
    assert eq.constants == (0.25,) and eq.metrics["r2_val"] == 0.9
    for bad, fragment in [
        ({**good, "metrics": [0.9]}, "'metrics' must be a mapping"),
        ({**good, "constants": [True]}, "list of finite numbers"),
        ({**good, "constants": [float("inf")]}, "list of finite numbers"),
        ({**good, "provenance": "x"}, "'provenance' must be a mapping"),
        ({**good, "variables": {"g_0": 1}}, "'variables' must be a list"),
    ]:
        with pytest.raises(EquationParseError, match=fragment):
            Equation.from_json(bad)
    with pytest.raises(EquationParseError, match="nested too deeply"):
        Equation.from_json("[" * 100_000)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Equation.load(tmp_path / "none.json")
