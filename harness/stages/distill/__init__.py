"""The distill stage: symbolic regression of an SR dataset into a Pareto front, merged and chosen per source.

``fit`` holds the pure work (:func:`distill`, :func:`choose`, :func:`merge_and_choose`), ``table`` the
Table 3 rows of a finished stage, ``kind`` the stage kind, ``report`` its panels in ``sl2o report``.
"""

from harness.stages.distill.fit import (
    DEFAULT_MC_THRESHOLD,
    BackendUnavailableError,
    choose,
    distill,
    front_summary,
    merge_and_choose,
    target_varying_fraction,
    write_outputs,
)
from harness.stages.distill.kind import DistillKind, DistillStage, DistillTrial
from harness.stages.distill.table import distill_rows

__all__ = [
    "DEFAULT_MC_THRESHOLD",
    "BackendUnavailableError",
    "DistillKind",
    "DistillStage",
    "DistillTrial",
    "choose",
    "distill",
    "distill_rows",
    "front_summary",
    "merge_and_choose",
    "target_varying_fraction",
    "write_outputs",
]
