"""The collect stage: run a teacher and record (lagged features -> update) rows for symbolic regression.

``dataset`` holds the :class:`SRDataset` format, ``record`` the pure recording, ``kind`` the stage kind.
"""

from harness.stages.collect.dataset import DATASET_FORMAT, SRDataset, unscale_equation
from harness.stages.collect.kind import CollectKind, CollectStage, CollectTrial, SourceSpec
from harness.stages.collect.record import build_teacher, collect, collect_from_gradients

__all__ = [
    "DATASET_FORMAT",
    "CollectKind",
    "CollectStage",
    "CollectTrial",
    "SRDataset",
    "SourceSpec",
    "build_teacher",
    "collect",
    "collect_from_gradients",
    "unscale_equation",
]
