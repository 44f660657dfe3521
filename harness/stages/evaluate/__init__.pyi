# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .kind import EvaluateKind, EvaluateStage, EvaluateTrial, resolve_optimizers
from .metrics import METRIC_MODES
from .train import FINAL_WINDOW, EvalResult, evaluate, train

__all__ = [
    "FINAL_WINDOW",
    "METRIC_MODES",
    "EvalResult",
    "EvaluateKind",
    "EvaluateStage",
    "EvaluateTrial",
    "evaluate",
    "resolve_optimizers",
    "train",
]
