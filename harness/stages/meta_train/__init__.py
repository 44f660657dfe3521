"""The meta_train stage: meta-train a teacher (a numerical learned optimizer) on an optimizee distribution.

``run`` holds the pure work (a wrapper of :mod:`teachers.meta_train` with resume and artifacts), ``kind``
the stage kind, ``report`` its panel in ``sl2o report`` (meta-loss, validation loss, curriculum steps).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
