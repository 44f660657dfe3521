"""The evaluate stage: train optimizees with optimizers over seeds; its trials are the leaderboard's rows.

``train`` holds the pure work (:func:`train`, :func:`evaluate`, the metrics a suite may rank by), ``kind``
the stage kind. Its rows' plots (loss curves, performance profile) are the leaderboard's, drawn by
:mod:`harness.report`.
"""

from harness.stages.evaluate.kind import EvaluateKind, EvaluateStage, EvaluateTrial, resolve_optimizers
from harness.stages.evaluate.train import FINAL_WINDOW, METRIC_MODES, EvalResult, evaluate, train

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
