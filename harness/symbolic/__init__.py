"""Symbolic core: distilled update rules as equations, run as optimizers, found by symbolic regression.

* :mod:`~harness.symbolic.lang`: the expression language: grammar names, safe parser, printer, lowering to
  numpy/torch, :class:`Equation`, Pareto fronts, PySR hall-of-fame import;
* :mod:`~harness.symbolic.optim`: running an equation as a torch optimizer;
* :mod:`~harness.symbolic.sr`: symbolic-regression backends (imported on demand; registers them).

This facade re-exports the language's main names and the metrics; notes: ``docs/symbolic.md``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
