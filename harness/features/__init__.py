"""Coordinate-wise optimizer features and their lag history: the ONE definition used everywhere.

Teachers, the SR dataset collector and the SymbolicOptimizer all compute their inputs here, so they can never
disagree on a definition, a constant or a lag order. This facade only re-exports, lazily: the names are in
``__init__.pyi``, and importing a light module (``names``, ``vocabulary``) does not import torch. The definitions
of the features are in ``docs/symbolic.md``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
