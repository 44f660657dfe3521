"""The collect stage kind: one trial per source (a meta-trained teacher, a checkpoint or a rule)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.config.specs import MAX_STEPS, Seed
from harness.config.suite import OptimizeeSpec, StageBase, StageRef, Suite
from harness.features.names import MAX_LAG
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult
from harness.stages.outputs import DATASET_FILE, StageOutcome, did_not_learn, teacher_trials


class SourceSpec(BaseModel):
    """What a collect stage records: an earlier meta_train stage, a teacher checkpoint, or a rule."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    from_stage: str | None = None
    checkpoint: str | None = None
    rule: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> SourceSpec:
        given = [k for k in ("from_stage", "checkpoint", "rule") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of from_stage, checkpoint or rule")
        if self.rule is not None:
            from harness.registry import TEACHERS

            TEACHERS.check_kwargs(self.rule, self.kwargs, f"rule {self.rule!r}")
        return self


#: the most rows a collect trial records (a dataset of 10^7 rows x F*T float32 columns is already GBs)
MAX_SAMPLES = 10**7


class CollectSettings(BaseModel):
    """What to record and how much: shared by the stage entry and each of its trials."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    optimizees: list[OptimizeeSpec] = Field(min_length=1)
    #: SR feature names (default: the source's own input features)
    features: list[str] | None = None
    lags: int = Field(default=20, gt=0, le=MAX_LAG + 1)
    #: only these ``feature_lag`` columns (default: every feature at every lag)
    variables: list[str] | None = None
    n_samples: int = Field(default=5000, gt=0, le=MAX_SAMPLES)
    holdout: float = Field(default=0.2, gt=0, lt=1)
    steps: int = Field(default=200, gt=0, le=MAX_STEPS)
    seeds_per_optimizee: int = Field(default=2, gt=0, le=1000)
    seed: Seed = 0

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            from harness.features import FeatureSpec

            FeatureSpec(tuple(v))
        return v

    def collect_settings(self) -> dict[str, Any]:
        """These fields' values (to copy from a stage entry into its trials)."""
        return {k: getattr(self, k) for k in CollectSettings.model_fields}


class CollectStage(StageBase, CollectSettings):
    """Run a source optimizer and record (feature history, update) pairs for symbolic regression."""

    kind: Literal["collect"]
    source: SourceSpec

    def inputs(self) -> list[StageRef]:
        return [(self.source.from_stage, ("meta_train",))] if self.source.from_stage else []


class CollectTrial(TrialModel, CollectSettings):
    """One dataset: a resolved source (``{"rule", "kwargs"}`` or ``{"checkpoint"}``, plus a ``label``)."""

    source: dict[str, Any]

    @field_validator("source")
    @classmethod
    def _source(cls, v: dict[str, Any]) -> dict[str, Any]:
        if ("rule" in v) == ("checkpoint" in v) or "label" not in v:
            raise ValueError("a trial's source needs a label and exactly one of rule or checkpoint")
        return v


class CollectKind(StageKind[CollectStage, CollectTrial]):
    """``collect``: the distillation datasets."""

    name = "collect"
    spec_model = CollectStage
    trial_model = CollectTrial
    outputs = (DATASET_FILE,)
    metric = "n_train"
    mode = "max"
    identity = ("source", "seed")

    def plan(
        self, suite: Suite, spec: CollectStage, inputs: Mapping[str, StageOutcome]
    ) -> list[CollectTrial]:
        src = spec.source
        if src.from_stage:
            sources = [
                {"checkpoint": str(p), "label": label} | ({"learned": False} if did_not_learn(t) else {})
                for label, p, t in teacher_trials(inputs[src.from_stage])
            ]
        elif src.checkpoint:
            path = Path(src.checkpoint).resolve()  # trials run elsewhere: an absolute path
            sources = [{"checkpoint": str(path), "label": path.name}]
        else:
            sources = [{"rule": src.rule, "kwargs": dict(src.kwargs), "label": src.rule}]
        return [CollectTrial(source=s, **spec.collect_settings()) for s in sources]

    def run(self, trial: CollectTrial, ctx: TrialContext) -> TrialResult:
        from harness.stages.collect.record import (
            collect,  # torch: imported when a trial runs, not to validate
        )

        start = time.time()
        source = dict(trial.source)
        learned = source.pop("learned", True)

        def on_run(done: int, total: int) -> None:
            ctx.set_total(total)
            ctx.progress(done, runs=float(done))

        ds = collect(
            source,
            [o.model_dump(exclude_none=True) for o in trial.optimizees],
            features=trial.features,
            lags=trial.lags,
            n_samples=trial.n_samples,
            holdout=trial.holdout,
            steps=trial.steps,
            seed=trial.seed,
            variables=trial.variables,
            seeds_per_optimizee=trial.seeds_per_optimizee,
            on_run=on_run,
        )
        info = {}
        if learned is False:
            ds.source["learned"] = False
            info["warning"] = (
                f"source {source['label']!r} is a teacher that did not learn (see its meta_train trial); "
                "its updates reflect its initial weights"
            )
        path = ds.save(ctx.outdir / DATASET_FILE)
        metrics = {
            "n_train": float(len(ds.y_train)),
            "n_val": float(len(ds.y_val)),
            "n_inputs": float(ds.X_train.shape[1]),
            "seconds": time.time() - start,
        }
        return TrialResult(metrics, files={DATASET_FILE: path}, info=info)

    def summary_lines(self, spec: CollectStage, outcome: StageOutcome) -> list[str]:
        return [
            f"{t.tag('source')}: {int(t.metrics.get('n_train', 0))} train + {int(t.metrics.get('n_val', 0))} "
            f"held-out samples, {int(t.metrics.get('n_inputs', 0))} inputs"
            for t in sorted(outcome.trials, key=lambda t: t.tag("source"))
        ]

    def trial_tags(self, trial: CollectTrial) -> dict[str, str]:
        return {"source": str(trial.source.get("label"))}
