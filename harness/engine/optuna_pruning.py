"""Ray Tune's ``OptunaSearch``, told the truth about trials that early stopping ended (engine layer).

When a scheduler (ASHA) stops a trial, Tune calls the searcher's ``on_trial_complete`` with the trial's last
result (``TuneController.stop_trial``), an interim report. Stock ``OptunaSearch`` then tells the study that
report's metric as the trial's objective, ``COMPLETE``, though it is the loss of a partly trained run. Here
such a trial is told as ``PRUNED`` (``on_trial_complete`` without a result, as ``OptunaSearch`` does for a trial
with no metric), and the intermediate values Optuna keeps (its samplers rank pruned trials by them) are the
rung reports' interim metric at their training step, not every report at Tune's iteration count.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from harness.stages.outputs import ResultKey, stopped_early


class PruningOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records a trial early stopping ended as ``PRUNED`` (module docstring)."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Only rung reports (the ones ASHA compares) become Optuna intermediate values, at their step."""
        keys = result.get(ResultKey.INTERIM_KEYS)
        if not keys or ResultKey.STEP not in result or trial_id in self._completed_trials:
            return
        value = result.get(self.metric)
        if isinstance(value, int | float):
            self._ot_trials[trial_id].report(float(value), int(result[ResultKey.STEP]))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if result is not None and stopped_early(result):
            result = None  # no objective: OptunaSearch tells the study PRUNED (FAIL only with error)
        super().on_trial_complete(trial_id, result=result, error=error)
