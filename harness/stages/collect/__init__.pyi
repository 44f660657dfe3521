# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .dataset import DATASET_FORMAT, SRDataset, unscale_equation
from .kind import CollectKind, CollectStage, CollectTrial, SourceSpec
from .record import build_teacher, collect, collect_from_gradients

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
