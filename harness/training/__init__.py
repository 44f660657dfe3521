"""Training pieces shared by stages and teachers, pure torch (no Ray, no MLflow).

``unroll`` (:func:`harness.training.unroll.unroll`, the truncated unrolled loop that teacher meta-training and
gradient meta-tuning share; not re-exported, so the name stays the module's), ``optimizers`` (an optimizer
config dict to a torch optimizer) and ``schedules`` (step-size schedules).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
