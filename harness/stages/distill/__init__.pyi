# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .fit import (
    DEFAULT_MC_THRESHOLD,
    BackendUnavailableError,
    choose,
    distill,
    front_summary,
    merge_and_choose,
    target_varying_fraction,
    write_outputs,
)
from .kind import DistillKind, DistillStage, DistillTrial
from .table import distill_rows

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
