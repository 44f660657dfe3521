"""Early stopping of a stage's trials: Ray Tune's ASHA, one bracket per task (engine layer: Ray lives here).

A stage kind with early stopping (:meth:`StageKind.early_stopping <harness.stages.base.StageKind.early_stopping>`)
mixes tasks whose losses are not comparable (an MLP and a ResNet, 100 and 500 steps). :class:`PerTaskASHA`
keeps one ``ASHAScheduler`` per task (:meth:`StageKind.trial_task <harness.stages.base.StageKind.trial_task>`)
and hands each trial's events to its task's scheduler; ASHA itself decides. The trials report at ASHA's rungs
only (:func:`milestones`, read by :class:`harness.engine.trainable.TuneContext`), not at every log point.

A trial ASHA stops gets ``done: True`` on the result where it was stopped (Tune's), with no final report: the
tracker records it as ``stopped`` (:func:`harness.stages.outputs.stopped_early`), the stage counts it as finished, and
:func:`budget_metrics` says how many training steps stopping saved.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from harness.config.specs import EarlyStopping
from harness.registry import STAGES
from harness.stages.base import StageKind
from harness.stages.outputs import STATUS_STOPPED, ResultKey, TrialOutput

__all__ = [
    "PerTaskASHA",
    "budget_metrics",
    "early_stopping_config",
    "milestones",
]


def milestones(grace: int, reduction_factor: float, total: int) -> list[float]:
    """ASHA's rungs for a trial of ``total`` steps, ascending, those below ``total`` only: the rungs of
    ``ASHAScheduler(max_t=total, grace_period=grace, reduction_factor=rf, brackets=1)``, computed as its
    ``_Bracket`` computes them (a rung at ``total`` itself would stop nothing: the trial has trained)."""
    if grace < 1 or total < 1 or reduction_factor <= 1:
        raise ValueError(
            f"bad ASHA settings: grace {grace}, reduction factor {reduction_factor}, total {total}"
        )
    if grace > total:
        return []
    n_rungs = int(np.log(total / grace) / np.log(reduction_factor) + 1)  # _Bracket's MAX_RUNGS with s = 0
    return [m for m in (grace * reduction_factor**k for k in range(n_rungs)) if m < total]


def early_stopping_config(
    kind: StageKind[Any, Any], stage: Any, param_space: dict[str, Any]
) -> dict[str, Any]:
    """For a stage with early stopping: its settings put into ``param_space`` (what a trial needs to report at
    the rungs, beside ``kind`` and ``trial``) and the ``tune.TuneConfig`` arguments (the scheduler); for one
    without, nothing (``{}``)."""
    settings = kind.early_stopping(stage)
    if settings is None:
        return {}
    param_space["early_stopping"] = {
        "grace_steps": settings.grace_steps,
        "reduction_factor": settings.reduction_factor,
    }
    return {"scheduler": PerTaskASHA(kind.name, settings)}


class PerTaskASHA(FIFOScheduler):
    """One ``ASHAScheduler(time_attr="step", metric=<the kind's interim metric>, mode="min", brackets=1,
    stop_last_trials=False)`` per task, ``max_t`` the task's steps; a trial's events go to its task's
    scheduler (created at its first trial). Trials without a task always continue.

    Its own ``metric`` stays None: Tune's strict metric check then does not ask every report (curve batches,
    checkpoints) for the interim metric; each ASHA skips reports that lack ``step`` or the metric. Picklable
    (Tune saves the scheduler with the experiment); the stage kind is looked up by name.
    """

    def __init__(self, kind: str, settings: EarlyStopping) -> None:
        super().__init__()
        self.kind = kind
        self.grace = settings.grace_steps
        self.reduction_factor = settings.reduction_factor
        self.interim_metric = STAGES.get(kind).interim_metric
        if not self.interim_metric:
            raise ValueError(f"stage kind {kind!r} names no interim metric, so its trials cannot stop early")
        #: task label -> its ASHA
        self.schedulers: dict[str, ASHAScheduler] = {}
        #: Tune's trial id -> its task label
        self.tasks: dict[str, str] = {}

    def _task(self, trial: Any) -> tuple[str, int] | None:
        model = (trial.config or {}).get("trial")
        return None if model is None else STAGES.get(self.kind).trial_task(model)

    def _scheduler(self, trial: Any) -> ASHAScheduler | None:
        task = self.tasks.get(trial.trial_id)
        return None if task is None else self.schedulers[task]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        task = self._task(trial)
        if task is None:
            return
        label, steps = task
        if label not in self.schedulers:
            self.schedulers[label] = ASHAScheduler(
                time_attr=ResultKey.STEP,
                metric=self.interim_metric,
                mode="min",
                max_t=steps,
                grace_period=min(self.grace, steps),
                reduction_factor=self.reduction_factor,
                brackets=1,
                stop_last_trials=False,
            )
        self.tasks[trial.trial_id] = label
        self.schedulers[label].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        sched = self._scheduler(trial)
        if sched is None:
            return TrialScheduler.CONTINUE
        return sched.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        sched = self._scheduler(trial)
        if sched is not None:
            sched.on_trial_complete(tune_controller, trial, result)
            self.tasks.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        sched = self._scheduler(trial)
        if sched is not None:
            sched.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        sched = self._scheduler(trial)
        if sched is not None:
            sched.on_trial_remove(tune_controller, trial)
            self.tasks.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return (
            "\n".join(f"{task}: {s.debug_string()}" for task, s in self.schedulers.items()) or "PerTaskASHA"
        )


def budget_metrics(
    kind: StageKind[Any, Any], trials: Iterable[Any], keys: Iterable[str], outputs: Iterable[TrialOutput]
) -> dict[str, float]:
    """The stage run's early-stopping figures: trials stopped, training steps the full grid plans (``trials``,
    the planned trial models, with their ``keys``), steps run, and the fraction stopping saved (steps not
    trained, over the planned ones). ``outputs`` are the stage's finished trial records.

    A search (meta_tune's ``search: tune``) plans one base trial and runs the trials its searcher proposes from
    it, whose keys are not planned: each such record counts the base trial's steps, and the plan is those
    records (every proposal of a finished search has one)."""
    planned_by_key: dict[str, int] = {}
    for trial, key in zip(trials, keys, strict=True):
        task = kind.trial_task(trial)
        planned_by_key[key] = task[1] if task is not None else 0
    outputs = list(outputs)
    base = max(planned_by_key.values(), default=0)
    proposed = [out for out in outputs if out.tag("trial_key") not in planned_by_key]
    planned = base * len(proposed) if proposed else sum(planned_by_key.values())
    stopped, saved = 0, 0.0
    for out in outputs:
        if out.tag("status") != STATUS_STOPPED:
            continue
        stopped += 1
        total = planned_by_key.get(out.tag("trial_key"), base)
        at = out.metrics.get(ResultKey.STOPPED_AT, total)
        saved += max(0.0, total - float(at)) if math.isfinite(float(at)) else 0.0
    return {
        "early_stopped": float(stopped),
        "budget_steps_planned": float(planned),
        "budget_steps_run": float(planned - saved),
        "budget_saved_fraction": saved / planned if planned else 0.0,
    }
