"""The meta_train stage: meta-train a teacher (a numerical learned optimizer) on an optimizee distribution.

``run`` holds the pure work (a wrapper of :mod:`teachers.meta_train` with resume and artifacts), ``kind``
the stage kind, ``report`` its panel in ``sl2o report`` (meta-loss, validation loss, curriculum steps).
"""

from harness.stages.meta_train.kind import MetaTrainKind, MetaTrainStage, MetaTrainTrial, TeacherSpec
from harness.stages.meta_train.run import (
    INITIAL_VAL_KEY,
    LEARN_MARGIN,
    MetaTrainOutcome,
    make_config,
    run_meta_train,
    write_outputs,
)

__all__ = [
    "INITIAL_VAL_KEY",
    "LEARN_MARGIN",
    "MetaTrainKind",
    "MetaTrainOutcome",
    "MetaTrainStage",
    "MetaTrainTrial",
    "TeacherSpec",
    "make_config",
    "run_meta_train",
    "write_outputs",
]
