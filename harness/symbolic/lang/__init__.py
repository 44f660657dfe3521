"""Equations over lagged features: a safe parser, one canonical text form, numpy and torch evaluation.

The public face of the equation layer: this module only re-exports. The code lives in one module per
concern, imported in one direction (names -> functions -> parser / printer / lowering -> compiled ->
expression -> front -> pysr_import): :mod:`~harness.symbolic.lang.names`, :mod:`~harness.symbolic.lang.functions`,
:mod:`~harness.symbolic.lang.parser`, :mod:`~harness.symbolic.lang.printer`, :mod:`~harness.symbolic.lang.lowering`,
:mod:`~harness.symbolic.lang.compiled`, :mod:`~harness.symbolic.lang.expression` (the :class:`Equation` class),
:mod:`~harness.symbolic.lang.front` and :mod:`~harness.symbolic.lang.hall_of_fame`.

An :class:`Equation` is a sympy expression over variables named ``{feature}_{lag}`` (``g_0``, ``m_hat_3``;
the feature may contain underscores, the lag is the part after the LAST underscore, lag 0 = newest) and
constant symbols ``c0 .. cN``. Every numeric constant OCCURRENCE is its own symbol with its own value, so
``0.5*g_0 + 0.5*g_1`` has two constants and compiles to two trainable parameters (never tied).

Grammar of the text form (what :meth:`Equation.parse` accepts and ``str(eq)`` prints), a subset of Python
expressions checked node by node on the ``ast`` and turned into sympy objects directly (nothing is ever
``eval``-ed, ``sympify``-ed or ``parse_expr``-ed):

* variables ``feature_lag``; float literals (``0.5``, ``1e-05``, ``-2.0``) are trainable constants;
  integer literals (``2``, ``(1/3)``) are fixed structural numbers (exponents, small coefficients);
* ``+ - * / **`` and unary ``- +``; ``**`` is the plain power (NaN for a negative base and a fractional
  exponent, like numpy);
* functions: ``sqrt`` and ``pow`` are SIGN-EXTENDED as in the paper: ``sqrt(x) = sign(x)*sqrt(|x|)``,
  ``pow(x, y) = sign(x)*|x|**y`` (``ssqrt``/``spow`` are accepted aliases); ``square cube exp log tanh
  asinh sinh cos sin abs sign erfc relu`` are the usual ones (``log`` is the plain log, NaN below 0).

Caps: text length, AST node count and depth, and the size of constant exponents / structural integers,
so hostile input (``9**9**9``, deep nesting, attribute access, calls to unknown functions) is refused with
:class:`EquationParseError` before anything expensive happens.

Canonical form: constants are numbered in the order they appear in the canonical text, which is printed
with a deterministic order of terms that does not depend on constant names; so ``parse(str(eq)) == eq``.
"""

from harness.jsonio import write_json
from harness.symbolic.lang.compiled import CompiledEquation
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.functions import relu, spow, ssqrt
from harness.symbolic.lang.hall_of_fame import import_hall_of_fame
from harness.symbolic.lang.names import (
    MAX_AST_DEPTH,
    MAX_AST_NODES,
    MAX_EXPONENT,
    MAX_TEXT_LENGTH,
    OPERATOR_NAMES,
    EquationParseError,
    is_variable_name,
    normalize_operators,
    split_variable,
)

__all__ = [
    "MAX_AST_DEPTH",
    "MAX_AST_NODES",
    "MAX_EXPONENT",
    "MAX_TEXT_LENGTH",
    "OPERATOR_NAMES",
    "CompiledEquation",
    "Equation",
    "EquationParseError",
    "ParetoFront",
    "import_hall_of_fame",
    "is_variable_name",
    "normalize_operators",
    "relu",
    "split_variable",
    "spow",
    "ssqrt",
    "write_json",
]
