"""Running an :class:`~harness.symbolic.lang.Equation` as a ``torch.optim`` optimizer.

:class:`SymbolicOptimizer` (stateful) lives in :mod:`~harness.symbolic.optim.optimizer` with its functional
twin; the step arithmetic is in :mod:`~harness.symbolic.optim.step`. Notes: ``docs/symbolic.md``.
"""

from harness.symbolic.optim.optimizer import SymbolicOptimizer

__all__ = ["SymbolicOptimizer"]
