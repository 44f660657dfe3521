"""The meta_tune stage: fit a symbolic rule's constants to a target optimizee, by gradient or by Optuna.

``common`` (training with an equation, the validation split, constant slots, search spaces), ``gradient`` and
``optuna_search`` (the two methods), ``tune`` (:func:`meta_tune` and its result), ``kind`` (the stage kind).
The unrolled window gradient tuning runs is :func:`harness.training.unroll.unroll`, shared with teacher meta-training.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
