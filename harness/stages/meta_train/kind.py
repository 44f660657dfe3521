"""The ``meta_train`` stage kind: one trial per teacher x optimizee x seed, checkpointed as it trains."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from harness.config.specs import Seeds
from harness.config.suite import OptimizeeSpec, StageBase, Suite
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult, given
from harness.stages.meta_train.settings import (
    INITIAL_VAL_KEY,
    LEARN_MARGIN,
    MetaTrainSettings,
    check_settings,
    make_config,
)
from harness.stages.outputs import HISTORY_FILE, STATUS_DIVERGED, STATUS_OK, TEACHER_FILE, StageOutcome
from harness.stages.views import Panel, StageView

if TYPE_CHECKING:
    from teachers.meta_train import MetaTrainer


class TeacherSpec(BaseModel):
    """A registered teacher, its constructor kwargs, and meta-training settings that override the
    stage's for this teacher only (e.g. ``{curriculum: true, imitation: true}`` for DM+CL+IL)."""

    model_config = {"extra": "forbid"}

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    settings: MetaTrainSettings = Field(default_factory=MetaTrainSettings)  # type: ignore[valid-type]
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.+-]+$")

    def display(self) -> str:
        return self.label or self.name

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from harness.registry import TEACHERS

        TEACHERS.require(v)
        return v

    @model_validator(mode="after")
    def _kwargs_match_signature(self) -> TeacherSpec:
        from harness.registry import TEACHERS

        if self.name in TEACHERS:
            TEACHERS.check_kwargs(self.name, self.kwargs, f"teacher {self.name!r}")
        return self


class MetaTrainStage(StageBase):
    """Meta-train every teacher on every optimizee distribution for every seed (truncated BPTT)."""

    kind: Literal["meta_train"]
    teachers: list[TeacherSpec] = Field(min_length=1)
    optimizees: list[OptimizeeSpec] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0])
    settings: MetaTrainSettings = Field(default_factory=MetaTrainSettings)  # type: ignore[valid-type]
    checkpoint_every: int = Field(default=5, gt=0)

    @model_validator(mode="after")
    def _settings(self) -> MetaTrainStage:
        labels = [t.display() for t in self.teachers]
        for t in self.teachers:
            check_settings(self.merged_settings(t))
        if len(set(labels)) != len(labels):
            raise ValueError(f"teacher labels must be unique (got {labels}); give each a distinct label")
        return self

    def merged_settings(self, teacher: TeacherSpec) -> dict[str, Any]:
        """The stage's settings with the teacher's own on top."""
        return {**given(self.settings), **given(teacher.settings)}


class MetaTrainTrial(TrialModel):
    """One meta-training run: a teacher on an optimizee distribution from a seed, with its settings."""

    teacher: TeacherSpec
    optimizee: OptimizeeSpec
    seed: int
    settings: dict[str, Any] = Field(default_factory=dict)
    checkpoint_every: int = Field(default=5, gt=0)

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_settings(v)
        return v


class MetaTrainKind(StageKind[MetaTrainStage, MetaTrainTrial]):
    """``meta_train``: teachers, checkpointed so a killed trial resumes where it was."""

    name = "meta_train"
    spec_model = MetaTrainStage
    trial_model = MetaTrainTrial
    outputs = (TEACHER_FILE, HISTORY_FILE)
    metric = "best_val_loss"
    identity = ("teacher", "optimizee", "seed", "settings")

    def report(self, view: StageView, out: Path) -> list[Panel]:
        from harness.stages.meta_train.report import meta_train_panels  # matplotlib: only to draw

        return meta_train_panels(view, out)

    def min_trials(self, spec: MetaTrainStage) -> int:
        return len(spec.teachers) * len(spec.optimizees) * len(spec.seeds)

    def plan(
        self, suite: Suite, spec: MetaTrainStage, inputs: Mapping[str, StageOutcome]
    ) -> list[MetaTrainTrial]:
        return [
            MetaTrainTrial(
                teacher=t,
                optimizee=o,
                seed=seed,
                settings=spec.merged_settings(t),
                checkpoint_every=spec.checkpoint_every,
            )
            for t in spec.teachers
            for o in spec.optimizees
            for seed in spec.seeds
        ]

    def run(self, trial: MetaTrainTrial, ctx: TrialContext) -> TrialResult:
        from harness.stages.meta_train.run import run_meta_train, write_outputs  # torch: when a trial runs

        teacher = {"name": trial.teacher.name, "kwargs": trial.teacher.kwargs}
        cfg = make_config(teacher, trial.optimizee.model_dump(), trial.seed, trial.settings)
        if cfg.episodes:
            ctx.set_total(cfg.episodes)

        def on_episode(trainer: MetaTrainer, m: dict[str, Any]) -> None:
            ep = int(m["episode"])
            ctx.progress(
                ep,
                meta_loss=float(m.get("meta_loss", math.nan)),
                val_loss=float(m.get("val_loss", math.nan)),
            )
            if ep % trial.checkpoint_every == 0:
                ctx.checkpoint(
                    {**trainer.state_dict(), INITIAL_VAL_KEY: m[INITIAL_VAL_KEY]},
                    episode=float(ep),
                    best_val_loss=float(m.get("best_val_loss", math.inf)),
                )

        outcome = run_meta_train(cfg, resume=ctx.restore(), on_episode=on_episode)
        result = outcome.result
        files = write_outputs(result, cfg, ctx.outdir)
        metrics = {
            "initial_val_loss": outcome.initial_val_loss,
            "best_val_loss": result.best_val_loss,
            "learned": float(outcome.learned),
            "episodes": float(result.episodes),
            "meta_iterations": float(result.meta_iterations),
            "elapsed_s": result.elapsed_s,
        }
        status = STATUS_OK if math.isfinite(result.best_val_loss) else STATUS_DIVERGED
        info = {"stop_reason": result.stop_reason, "learned": str(outcome.learned).lower()}
        if not outcome.learned:
            info["warning"] = (
                f"teacher did not learn: validation loss {outcome.initial_val_loss:.4g} at the start, "
                f"best {result.best_val_loss:.4g} (needs to fall by {LEARN_MARGIN:.0%}); check meta_lr, "
                "the budget and out_scale"
            )
        return TrialResult(metrics, status=status, files=files, info=info)

    def summary_lines(self, spec: MetaTrainStage, outcome: StageOutcome) -> list[str]:
        lines = []
        for t in sorted(outcome.trials, key=lambda t: (t.tag("teacher"), t.tag("optimizee"), t.tag("seed"))):
            start, best = (
                t.metrics.get("initial_val_loss", math.nan),
                t.metrics.get("best_val_loss", math.nan),
            )
            verdict = "DID NOT LEARN" if t.tag("learned", "true") == "false" else "learned"
            lines.append(
                f"{t.tag('teacher')} on {t.tag('optimizee')} s{t.tag('seed')}: validation loss "
                f"{start:.4g} -> {best:.4g} ({verdict}; stopped: {t.tag('stop_reason')})"
            )
        return lines

    def trial_tags(self, trial: MetaTrainTrial) -> dict[str, str]:
        return {
            "teacher": trial.teacher.display(),
            "optimizee": trial.optimizee.display(),
            "seed": str(trial.seed),
        }
