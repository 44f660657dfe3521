"""The meta_tune stage: fit a symbolic rule's constants to a target optimizee, by gradient or by Optuna.

``common`` (training with an equation, the validation split, constant slots, search spaces), ``gradient`` and
``optuna_search`` (the two methods), ``tune`` (:func:`meta_tune` and its result), ``kind`` (the stage kind).
The unrolled window gradient tuning runs is :func:`harness.training.unroll.unroll`, shared with teacher meta-training.
"""

from harness.stages.meta_tune.common import (
    DIVERGED_PENALTY,
    constant_slots,
    constants_from_values,
    evaluate_constants,
    optuna_search_space,
    run_training,
    with_val_split,
)
from harness.stages.meta_tune.gradient import ConstantSlots, Tunable, meta_tune_gradient, tunables
from harness.stages.meta_tune.kind import MetaTuneKind, MetaTuneStage, MetaTuneTrial
from harness.stages.meta_tune.optuna_search import meta_tune_optuna
from harness.stages.meta_tune.tune import MetaTuneResult, meta_tune, write_outputs
from harness.stages.problems import build_problem

__all__ = [
    "DIVERGED_PENALTY",
    "ConstantSlots",
    "MetaTuneKind",
    "MetaTuneResult",
    "MetaTuneStage",
    "MetaTuneTrial",
    "Tunable",
    "build_problem",
    "constant_slots",
    "constants_from_values",
    "evaluate_constants",
    "meta_tune",
    "meta_tune_gradient",
    "meta_tune_optuna",
    "optuna_search_space",
    "run_training",
    "tunables",
    "with_val_split",
    "write_outputs",
]
