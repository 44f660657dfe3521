"""The ``evaluate`` stage kind: one trial per optimizee x horizon x optimizer x seed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.config.specs import EarlyStopping, Seeds, task_label
from harness.config.suite import (
    GridRef,
    OptimizeeHorizons,
    OptimizeeSpec,
    OptimizerEntry,
    StageBase,
    StageRef,
    Suite,
    TunedRef,
)
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult
from harness.stages.evaluate.metrics import INTERIM_METRIC, METRIC_MODES
from harness.stages.outputs import STATUS_STOPPED, StageOutcome, optimizers_from_stage, tuned_from_stage
from harness.training.labels import FAMILIES, optimizer_label


class EvaluateStage(StageBase):
    """Train every optimizee, at each of its horizons, with every optimizer for every seed; record curves
    and final metrics."""

    kind: Literal["evaluate"]
    optimizees: list[OptimizeeHorizons] = Field(min_length=1)
    optimizers: list[OptimizerEntry] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0])
    log_every: int = Field(default=10, gt=0)
    device: str = "auto"
    #: stop the worse trials of each task early (ASHA on the interim training loss); None: run all to the end
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _early_stopping_horizons(self) -> EvaluateStage:
        """Early stopping needs every horizon in steps (its rungs are steps) and a grace below the shortest
        one (else no trial could ever be stopped)."""
        if self.early_stopping is None:
            return self
        steps: list[int] = []
        for entry in self.optimizees:
            for one in entry.horizons():
                if one.steps is None:
                    raise ValueError(
                        f"early_stopping needs every optimizee's horizon in steps; {one.display()} gives "
                        f"{'epochs' if one.epochs is not None else 'none'} (give steps: N)"
                    )
                steps.append(one.steps)
        grace = self.early_stopping.grace_steps
        if grace >= min(steps):
            raise ValueError(
                f"early_stopping.grace_steps ({grace}) must be below the shortest horizon ({min(steps)} steps): "
                "no trial could be stopped before its end"
            )
        return self

    def inputs(self) -> list[StageRef]:
        refs: list[StageRef] = []
        for opt in self.optimizers:
            if isinstance(opt, GridRef):
                continue
            if isinstance(opt, TunedRef):
                refs.append((opt.tuned, ("hpo",)))
                continue
            ref = getattr(opt, "from_stage", None)
            if ref:
                kinds = ("meta_train",) if opt.family == "teacher" else ("distill", "meta_tune")
                refs.append((ref, kinds))
        return refs


class EvaluateTrial(TrialModel):
    """One training run: an optimizee spec at one horizon, a concrete optimizer config (no grid, no
    from_stage), a seed."""

    optimizee: OptimizeeSpec
    optimizer: dict[str, Any]
    seed: int
    log_every: int = Field(default=10, gt=0)
    device: str = "auto"

    @field_validator("optimizer")
    @classmethod
    def _concrete(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("family") not in FAMILIES:
            raise ValueError(f"optimizer family {v.get('family')!r} is not one of {', '.join(FAMILIES)}")
        if "from_stage" in v or "grid" in v:
            raise ValueError("a trial's optimizer must be concrete (grids and from_stage resolved)")
        return v


def resolve_optimizers(stage: EvaluateStage, inputs: Mapping[str, StageOutcome]) -> list[dict[str, Any]]:
    """Expand grid references and earlier stages' outputs into concrete optimizer configs (deduplicated:
    :func:`repeated_optimizers` names the ones given more than once)."""
    seen, uniq = set(), []
    for o in _expand_optimizers(stage, inputs):
        k = json.dumps(o, sort_keys=True)
        if k not in seen:
            seen.add(k)
            uniq.append(o)
    return uniq


def repeated_optimizers(stage: EvaluateStage) -> list[str]:
    """Labels of the configs the stage's own entries give more than once (an explicit entry that repeats a
    grid config, two grids that share one): each runs once."""
    counts: dict[str, int] = {}
    own = stage.model_copy(
        update={
            "optimizers": [
                o
                for o in stage.optimizers
                if not getattr(o, "from_stage", None) and not isinstance(o, TunedRef)
            ]
        }
    )
    for o in _expand_optimizers(own, {}):
        label = optimizer_label(o)
        counts[label] = counts.get(label, 0) + 1
    return [label for label, n in counts.items() if n > 1]


def _expand_optimizers(stage: EvaluateStage, inputs: Mapping[str, StageOutcome]) -> list[dict[str, Any]]:
    from search_spaces import load_grid

    out: list[dict[str, Any]] = []
    for entry in stage.optimizers:
        if isinstance(entry, GridRef):
            out.extend(load_grid(entry.grid, entry.file))
            continue
        if isinstance(entry, TunedRef):
            out.append(tuned_from_stage(entry.tuned, entry.name, inputs[entry.tuned]))
            continue
        for one in entry.expand():  # list-valued fields are crossed like a grid block
            spec = one.model_dump(exclude_none=True, exclude_defaults=True)
            spec["family"] = entry.family
            src = spec.pop("from_stage", None)
            for key in ("equation", "checkpoint"):  # trials run elsewhere: hand them absolute paths
                if key in spec:
                    spec[key] = str(Path(spec[key]).resolve())
            out.extend([spec] if src is None else optimizers_from_stage(spec, inputs[src]))
    return out


class EvaluateKind(StageKind[EvaluateStage, EvaluateTrial]):
    """``evaluate``: the leaderboard's trials."""

    name = "evaluate"
    spec_model = EvaluateStage
    trial_model = EvaluateTrial
    outputs = ()
    metric = "final_train_loss"
    #: what its trials record: the metrics a suite's ``metric:`` may rank by (see harness.config.suite.Metric)
    metric_modes = METRIC_MODES
    leaderboard = True
    identity = ("optimizee", "optimizer", "seed")
    #: early stopping compares the mean of the last window of minibatch losses (``final_train_loss``'s
    #: definition), whatever the suite ranks by
    interim_metric = INTERIM_METRIC

    def min_trials(self, spec: EvaluateStage) -> int:
        from search_spaces import load_grid

        optimizers = 0
        for entry in spec.optimizers:
            if isinstance(entry, GridRef):
                optimizers += len(load_grid(entry.grid, entry.file))
            elif isinstance(entry, TunedRef):
                optimizers += 1
            else:  # an entry from an earlier stage gives at least one config per combination
                optimizers += len(entry.expand())
        horizons = sum(len(o.horizons()) for o in spec.optimizees)
        return horizons * optimizers * len(spec.seeds)

    def plan(
        self, suite: Suite, spec: EvaluateStage, inputs: Mapping[str, StageOutcome]
    ) -> list[EvaluateTrial]:
        optimizers = resolve_optimizers(spec, inputs)
        # a single-horizon entry plans the trials (and so the keys) it always did
        return [
            EvaluateTrial(optimizee=o, optimizer=opt, seed=seed, log_every=spec.log_every, device=spec.device)
            for entry in spec.optimizees
            for o in entry.horizons()
            for opt in optimizers
            for seed in spec.seeds
        ]

    def run(self, trial: EvaluateTrial, ctx: TrialContext) -> TrialResult:
        from harness.stages.evaluate.train import evaluate  # torch: when a trial runs, not to validate

        if trial.optimizee.steps:
            ctx.set_total(trial.optimizee.steps)
        result = evaluate(
            trial.optimizee.model_dump(exclude_none=True),
            trial.optimizer,
            trial.seed,
            device=trial.device,
            log_every=trial.log_every,
            on_log=lambda step, loss, mean: ctx.progress(step, train_loss=loss, **{INTERIM_METRIC: mean}),
        )
        info = {} if result.diverged_at is None else {"diverged_at": str(result.diverged_at)}
        return TrialResult(result.metrics(), status=result.status, info=info)

    def early_stopping(self, spec: EvaluateStage) -> EarlyStopping | None:
        return spec.early_stopping

    def trial_task(self, trial: EvaluateTrial) -> tuple[str, int] | None:
        if trial.optimizee.steps is None:  # validation refuses early stopping without steps
            return None
        return task_label(trial.optimizee.display(), trial.optimizee.horizon()), trial.optimizee.steps

    def summary_lines(self, spec: EvaluateStage, outcome: StageOutcome) -> list[str]:
        lines = []
        stopped = sum(1 for t in outcome.trials if t.tag("status") == STATUS_STOPPED)
        if stopped:
            lines.append(f"{stopped} trial(s) stopped early by ASHA (not ranked on the leaderboard)")
        repeated = repeated_optimizers(spec)
        if not repeated:
            return lines
        return lines + [
            f"{len(repeated)} optimizer config(s) given more than once (an entry repeating a grid config) ran "
            f"once each: {', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''}"
        ]

    def trial_tags(self, trial: EvaluateTrial) -> dict[str, str]:
        tags = {
            "optimizer": optimizer_label(trial.optimizer),
            "optimizee": trial.optimizee.display(),
        }
        horizon = trial.optimizee.horizon()
        if horizon:  # the leaderboard ranks each (optimizee, horizon) apart; run names show it
            tags["horizon"] = horizon
        tags["optimizer_family"] = str(trial.optimizer.get("family"))
        tags["seed"] = str(trial.seed)
        return tags
