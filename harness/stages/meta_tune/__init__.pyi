# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .common import (
    DIVERGED_PENALTY,
    constant_slots,
    constants_from_values,
    evaluate_constants,
    optuna_search_space,
    run_training,
    with_val_split,
)
from .gradient import ConstantSlots, Tunable, meta_tune_gradient, tunables
from .kind import MetaTuneKind, MetaTuneStage, MetaTuneTrial
from .optuna_search import meta_tune_optuna
from .tune import MetaTuneResult, meta_tune, write_outputs

__all__ = [
    "DIVERGED_PENALTY",
    "ConstantSlots",
    "MetaTuneKind",
    "MetaTuneResult",
    "MetaTuneStage",
    "MetaTuneTrial",
    "Tunable",
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
