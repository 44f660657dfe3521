"""The evaluate stage: train optimizees with optimizers over seeds; its trials are the leaderboard's rows.

``train`` holds the pure work (:func:`train`, :func:`evaluate`, the metrics a suite may rank by), ``kind``
the stage kind. Its rows' plots (loss curves, performance profile) are the leaderboard's, drawn by
:mod:`harness.report`.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
