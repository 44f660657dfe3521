# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .kind import MetaTrainKind, MetaTrainStage, MetaTrainTrial, TeacherSpec
from .run import MetaTrainOutcome, run_meta_train, write_outputs
from .settings import INITIAL_VAL_KEY, LEARN_MARGIN, make_config

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
