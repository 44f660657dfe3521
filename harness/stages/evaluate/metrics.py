"""The metrics an evaluate trial records and the direction each is better in (what a suite may rank by);
torch-free, so a suite's ``metric:`` validates without importing the training loop.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["INTERIM_METRIC", "METRIC_MODES"]

#: every metric an evaluate trial records (:meth:`EvalResult.metrics`), with the ``mode`` that ranks it
#: best-first: the names a suite's ``metric:`` may use
METRIC_MODES: dict[str, Literal["min", "max"]] = {
    "final_train_loss": "min",
    "test_loss": "min",
    "test_acc": "max",
    "wall_time_s": "min",
    "steps": "max",
    "diverged": "min",
}

#: the interim metric a trial reports at its log points (and early stopping compares): the mean of the last
#: window of minibatch losses, the window ``final_train_loss`` is the mean of at the end
INTERIM_METRIC = "train_loss_mean"
