# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .lang import (
    OPERATOR_NAMES,
    CompiledEquation,
    Equation,
    EquationParseError,
    ParetoFront,
    import_hall_of_fame,
    is_variable_name,
    normalize_operators,
    split_variable,
)
from .metrics import TPFResult, mc, mse, r2, sensitivities, tpf

__all__ = [
    "OPERATOR_NAMES",
    "CompiledEquation",
    "Equation",
    "EquationParseError",
    "ParetoFront",
    "TPFResult",
    "import_hall_of_fame",
    "is_variable_name",
    "mc",
    "mse",
    "normalize_operators",
    "r2",
    "sensitivities",
    "split_variable",
    "tpf",
]
