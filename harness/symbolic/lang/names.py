"""Names and limits of the equation grammar: variable and constant symbols, operator names, parse caps.

The lowest layer of the equation modules (only :mod:`harness.features`, the home of feature names, sits
below it), so the parser, printer and :class:`~harness.symbolic.lang.expression.Equation` agree on what a
variable (``feature_lag``) and a constant (``c0 .. cN``) look like.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sympy

from harness.features import is_variable_name, parse_variable

__all__ = [
    "MAX_AST_DEPTH",
    "MAX_AST_NODES",
    "MAX_EXPONENT",
    "MAX_FRONT_EQUATIONS",
    "MAX_FRONT_TEXT",
    "MAX_INT_LITERAL",
    "MAX_STRUCTURAL_BITS",
    "MAX_TEXT_LENGTH",
    "OPERATOR_NAMES",
    "EquationParseError",
    "const_symbol",
    "is_const_symbol",
    "is_variable_name",
    "normalize_operators",
    "split_variable",
    "var_symbol",
]

MAX_TEXT_LENGTH = 20_000
"""Longest equation text accepted (characters)."""
MAX_AST_NODES = 6_000
"""Most Python AST nodes (operators and contexts included) an equation text may have: about complexity 2,000
(eq. 6 over 3 features x 125 lags). sympy's work grows faster than linearly with nesting; at this cap a parse
stays within seconds (``tests/hostile``)."""
MAX_AST_DEPTH = 100
"""Deepest AST nesting accepted."""
MAX_EXPONENT = 100.0
"""Largest magnitude of a literal (constant or structural) exponent."""
MAX_INT_LITERAL = 10**18
"""Largest magnitude of an integer literal."""
MAX_STRUCTURAL_BITS = 4000
"""Largest bit size of a structural (exact rational) number built from integer literals."""
MAX_FRONT_EQUATIONS = 1_000
"""Most equations a Pareto front may hold (a merged front of a distill stage holds tens)."""
MAX_FRONT_TEXT = 100_000
"""Most characters of equation text a Pareto front may hold in all: parsing costs about 0.1 ms per
character (sympy's construction), so loading a front stays within about 10 s at this cap."""

_CONST_RE = re.compile(r"c(0|[1-9][0-9]*)")

split_variable = parse_variable
"""``"m_hat_3" -> ("m_hat", 3)``: :func:`harness.features.parse_variable` (one parser of variable names)."""

OPERATOR_NAMES: tuple[str, ...] = (
    "add",
    "sub",
    "mul",
    "div",
    "square",
    "cube",
    "sqrt",
    "pow",
    "exp",
    "log",
    "tanh",
    "asinh",
    "sinh",
    "relu",
    "erfc",
    "abs",
    "sign",
    "cos",
    "sin",
)
"""Operator names SR settings may use (``sqrt`` and ``pow`` sign-extended, as in the paper)."""
_OPERATOR_ALIASES = {"+": "add", "-": "sub", "*": "mul", "/": "div", "ssqrt": "sqrt", "spow": "pow"}


class EquationParseError(ValueError):
    """An equation text (or JSON) that is malformed, unsafe, or uses unknown names."""


def normalize_operators(operators: Iterable[str]) -> list[str]:
    """Map operator names and aliases (``+``, ``ssqrt``) to :data:`OPERATOR_NAMES`; unknown ones raise."""
    out: list[str] = []
    for raw in operators:
        name = _OPERATOR_ALIASES.get(str(raw).strip(), str(raw).strip())
        if name not in OPERATOR_NAMES:
            raise ValueError(f"unknown operator {raw!r}; known operators: {', '.join(OPERATOR_NAMES)}")
        if name not in out:
            out.append(name)
    return out


def var_symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of variable ``name`` (real, so one symbol per name everywhere)."""
    return sympy.Symbol(name, real=True)


def const_symbol(i: int) -> sympy.Symbol:
    """The sympy symbol of constant ``c{i}``."""
    return sympy.Symbol(f"c{i}", real=True)


def is_const_symbol(s: object) -> bool:
    """True for constant symbols ``c0 .. cN``."""
    return isinstance(s, sympy.Symbol) and _CONST_RE.fullmatch(s.name) is not None
