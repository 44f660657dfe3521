"""Symbolic core: distilled update rules as equations, run as optimizers, found by symbolic regression.

* :mod:`~harness.symbolic.lang`: the expression language: grammar names, safe parser, printer, lowering to
  numpy/torch, :class:`Equation`, Pareto fronts, PySR hall-of-fame import;
* :mod:`~harness.symbolic.optim`: running an equation as a torch optimizer;
* :mod:`~harness.symbolic.sr`: symbolic-regression backends (imported on demand; registers them).

This facade re-exports the language's main names and the metrics; notes: ``docs/symbolic.md``.
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
