# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .compiled import CompiledEquation
from .expression import Equation
from .front import ParetoFront
from .functions import relu, spow, ssqrt
from .hall_of_fame import import_hall_of_fame
from .names import (
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
]
