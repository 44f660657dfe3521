"""Built-in optimizees; importing this package registers them in ``harness.registry.OPTIMIZEES``."""

from optimizees.base import Batch, Optimizee

__all__ = ["Batch", "Optimizee"]
