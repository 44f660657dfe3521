"""The meta_train stage: meta-train one teacher on one optimizee distribution from one seed.

A thin, pure wrapper over ``teachers.meta_train`` that turns stage config dicts into a
``MetaTrainConfig``, supports resuming from a saved trainer state, and writes the stage's artifacts
(the best teacher's checkpoint and the training history). The stage kind below makes it one Ray Tune
trial per teacher x optimizee x seed, checkpointed every ``checkpoint_every`` episodes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from harness.config.suite import OptimizeeSpec, StageBase, Suite, check_kwargs
from harness.jsonio import write_json
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult, given, settings_model
from harness.stages.outputs import HISTORY_FILE, STATUS_DIVERGED, STATUS_OK, TEACHER_FILE, StageOutcome
from teachers.meta_train import MetaTrainConfig, MetaTrainer, MetaTrainResult

_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MetaTrainConfig))
#: MetaTrainConfig fields a stage's ``settings`` may set (teacher/optimizee/seed come from the grid)
SETTINGS_FIELDS = tuple(
    f
    for f in _CONFIG_FIELDS
    if f not in ("teacher", "teacher_kwargs", "optimizee", "optimizee_kwargs", "seed")
)


#: the typed model of a stage's (or a teacher's) ``settings:``, derived from ``MetaTrainConfig``
MetaTrainSettings = settings_model(
    "MetaTrainSettings",
    MetaTrainConfig,
    what="meta-training",
    exclude=tuple(f for f in _CONFIG_FIELDS if f not in SETTINGS_FIELDS),
)


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse unknown or invalid meta-training settings with a message naming them."""
    bad = sorted(set(settings) - set(SETTINGS_FIELDS))
    if bad:
        raise ValueError(
            f"unknown meta-training setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS_FIELDS)}"
        )
    make_config({"name": "rp"}, {"name": "quadratic_cos"}, 0, settings)


def make_config(
    teacher: Mapping[str, Any], optimizee: Mapping[str, Any], seed: int, settings: Mapping[str, Any]
) -> MetaTrainConfig:
    """A ``MetaTrainConfig`` from a stage's teacher spec, optimizee spec, seed and settings."""
    return MetaTrainConfig(
        teacher=teacher["name"],
        teacher_kwargs=dict(teacher.get("kwargs", {})),
        optimizee=optimizee["name"],
        optimizee_kwargs=dict(optimizee.get("kwargs", {})),
        seed=int(seed),
        **dict(settings),
    )


#: a teacher "learned" when its best validation loss is at least this fraction below its initial one
LEARN_MARGIN = 0.05
#: the key under which a checkpoint keeps the initial validation loss beside the trainer state
INITIAL_VAL_KEY = "initial_val_loss"


@dataclass
class MetaTrainOutcome:
    """A finished meta-training and the validation loss of the teacher before it (its initialisation)."""

    result: MetaTrainResult
    initial_val_loss: float

    @property
    def learned(self) -> bool:
        """Whether the kept teacher's validation loss is clearly (by :data:`LEARN_MARGIN`) below the start.

        A teacher that did not learn still yields a checkpoint, but its rule is whatever its initial
        weights do; distilling it gives a fit to noise or a near-constant (the run summary says so).
        """
        best, start = self.result.best_val_loss, self.initial_val_loss
        if not (math.isfinite(best) and math.isfinite(start)):
            return math.isfinite(best) and not math.isfinite(start)
        return best < start - LEARN_MARGIN * abs(start)


def run_meta_train(
    cfg: MetaTrainConfig,
    *,
    resume: Mapping[str, Any] | None = None,
    on_episode: Callable[[MetaTrainer, dict[str, Any]], Any] | None = None,
) -> MetaTrainOutcome:
    """Run (or continue from ``resume``: ``trainer.state_dict()`` plus ``initial_val_loss``) one meta-training.

    The teacher is validated once before training; ``on_episode(trainer, metrics)`` is called after each
    episode (progress, checkpoints) with that initial loss in ``metrics["initial_val_loss"]`` (a checkpoint
    keeps it beside the trainer state); a truthy return value stops the run early.
    """
    trainer = MetaTrainer(cfg)
    initial = math.nan
    if resume is not None:
        state = dict(resume)
        initial = float(state.pop(INITIAL_VAL_KEY, math.nan))
        trainer.load_state_dict(state)
    if not math.isfinite(initial) and resume is None:
        initial = trainer.validate()
    callback: Callable[[int, dict[str, Any]], Any] | None = None
    if on_episode is not None:
        hook = on_episode

        def per_episode(episode: int, metrics: dict[str, Any]) -> Any:
            return hook(trainer, {**metrics, INITIAL_VAL_KEY: initial})

        callback = per_episode

    return MetaTrainOutcome(trainer.run(callback), initial)


def write_outputs(result: MetaTrainResult, cfg: MetaTrainConfig, outdir: str | Path) -> dict[str, Path]:
    """Write ``teacher.pt`` (best weights, a teachers.checkpoint file) and ``history.json``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    teacher_path = out / TEACHER_FILE
    result.save(teacher_path, meta={"config": cfg.to_dict()})
    hist = write_json(
        out / HISTORY_FILE,
        {
            "config": cfg.to_dict(),
            "best_val_loss": result.best_val_loss,
            "best_episode": result.best_episode,
            "episodes": result.episodes,
            "meta_iterations": result.meta_iterations,
            "elapsed_s": result.elapsed_s,
            "stop_reason": result.stop_reason,
            "history": result.history,
        },
        indent=1,
    )
    return {TEACHER_FILE: teacher_path, HISTORY_FILE: hist}


# ---------------------------------------------------------------------------------------------------
# the stage kind
# ---------------------------------------------------------------------------------------------------
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

        TEACHERS.get(v)
        return v

    @model_validator(mode="after")
    def _kwargs_match_signature(self) -> TeacherSpec:
        from harness.registry import TEACHERS

        if self.name in TEACHERS:
            check_kwargs(TEACHERS.get(self.name), self.kwargs, f"teacher {self.name!r}")
        return self


class MetaTrainStage(StageBase):
    """Meta-train every teacher on every optimizee distribution for every seed (truncated BPTT)."""

    kind: Literal["meta_train"]
    teachers: list[TeacherSpec] = Field(min_length=1)
    optimizees: list[OptimizeeSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
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
