"""The meta_tune stage: fit a symbolic rule's constants to a target optimizee, by gradient or by Optuna.

``common`` (training with an equation, constant slots, search spaces), ``gradient`` and ``optuna_search``
(the two methods), ``tune`` (:func:`meta_tune` and its result), ``kind`` (the stage kind).
"""

from harness.stages.meta_tune.common import (
    DIVERGED_PENALTY,
    constant_slots,
    constants_from_values,
    evaluate_constants,
    optuna_search_space,
    run_training,
)
from harness.stages.meta_tune.gradient import meta_tune_gradient, unrolled_meta_loss
from harness.stages.meta_tune.kind import MetaTuneKind, MetaTuneStage, MetaTuneTrial
from harness.stages.meta_tune.optuna_search import meta_tune_optuna
from harness.stages.meta_tune.tune import MetaTuneResult, meta_tune, write_outputs
from harness.stages.problems import build_problem

__all__ = [
    "DIVERGED_PENALTY",
    "MetaTuneKind",
    "MetaTuneResult",
    "MetaTuneStage",
    "MetaTuneTrial",
    "build_problem",
    "constant_slots",
    "constants_from_values",
    "evaluate_constants",
    "meta_tune",
    "meta_tune_gradient",
    "meta_tune_optuna",
    "optuna_search_space",
    "run_training",
    "unrolled_meta_loss",
    "write_outputs",
]
