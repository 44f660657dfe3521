"""Symbolic core: equations (safe parser, sympy <-> numpy/torch), Pareto fronts, metrics, SR backends.

SR backends live in :mod:`harness.symbolic.sr` (imported on demand; importing it registers the built-ins
in :data:`harness.registry.SR_BACKENDS`). Plots live in :mod:`harness.symbolic.plots`.
"""

from harness.symbolic.lang import (
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
from harness.symbolic.metrics import TPFResult, mc, mse, r2, sensitivities, tpf

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
