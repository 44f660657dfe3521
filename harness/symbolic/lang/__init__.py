"""The equation language over lagged features: safe parser, canonical text, numpy and torch evaluation.

This facade only re-exports. Grammar of the text form (details and caps: ``docs/symbolic.md``):

* variables ``feature_lag`` (lag 0 = newest); float literals are trainable constants, one per occurrence;
  integer literals are fixed structural numbers;
* ``+ - * / **``, unary ``- +``; functions ``sqrt pow`` (SIGN-EXTENDED: ``sqrt(x) = sign(x)*sqrt(|x|)``),
  ``square cube exp log tanh asinh sinh cos sin abs sign erfc relu``.
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
