"""What stages hand each other, named once: artifact file names, trial-result keys, and the outcome types.

Ray-free and MLflow-free: the runner fills :class:`StageOutcome` from MLflow, the stage kinds read it in
their plans (``teachers_from_stage`` and friends find the files a finished stage's trials wrote), and the
tracker reads the result keys. A new stage kind names its own artifacts in its module; the shared ones are
here because more than one kind reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: prefix of every MLflow tag the harness writes (``sl2o.kind``, ``sl2o.seed``, ...)
TAG = "sl2o"

#: the folder of a trial's final Tune checkpoint whose files become the trial run's MLflow artifacts
ARTIFACTS_DIR = "artifacts"

# -- artifact files a stage's trials write and later stages read ----------------------------------------------
TEACHER_FILE = "teacher.pt"  # meta_train: the best teacher (teachers.checkpoint format)
TRAINER_FILE = "trainer.pt"  # meta_train: the trainer state inside a Tune checkpoint (resume)
HISTORY_FILE = "history.json"  # meta_train / meta_tune: the run's history
DATASET_FILE = "dataset.npz"  # collect: the SR dataset
FRONT_FILE = "equations.json"  # distill: one trial's Pareto front
BEST_FILE = "best.json"  # distill: one trial's chosen equation
CHOSEN_FILE = "chosen.json"  # distill (stage level): the merged fronts' chosen equation
MERGED_FRONT_FILE = "front.json"  # distill (stage level): the merged front, beside chosen.json
EQUATION_FILE = "equation.json"  # meta_tune: the tuned equation


class ResultKey:
    """Keys of the dicts a trial reports to Ray Tune (and the tracker reads)."""

    #: true on the trial's last report only; a trial without it did not finish
    FINAL = "final"
    #: the names of the final report's metrics (the rest are bookkeeping)
    FINAL_KEYS = "final_keys"
    #: ``ok`` | ``diverged`` (errors are Tune's, not a status)
    STATUS = "status"
    #: curve points since the last report: ``curve_steps`` plus ``curve_<name>`` lists of equal length
    CURVE_PREFIX = "curve_"
    CURVE_STEPS = "curve_steps"
    #: extra string facts of a final report logged as ``sl2o.<name>`` tags (e.g. ``stop_reason``)
    INFO = "info"
    #: the step of an interim report, and the step the trial ends at (when known)
    STEP = "step"
    TOTAL_STEPS = "total_steps"
    #: the names of an interim report's latest progress values (a rung report, which early stopping reads)
    INTERIM_KEYS = "interim_keys"
    #: logged on a trial that early stopping ended: the step of its last report
    STOPPED_AT = "stopped_at_step"
    #: Ray Tune's own mark of a trial's last result (set where a scheduler stopped it, too)
    DONE = "done"


class CostKey:
    """The cost every trial records (any kind), measured by the trainable around the kind's run: wall
    seconds, CPU seconds of the trial's process (all its threads), GPU seconds (GPUs held x wall; only on a
    trial with GPUs), the node (``sl2o.node`` tag) and when it started (Unix seconds, the node's clock; the
    report's timeline). A retried trial records its last attempt."""

    WALL = "cost_wall_s"
    START = "started_at_s"
    CPU = "cost_cpu_s"
    GPU = "cost_gpu_s"
    NODE = "node"


STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
#: a trial that early stopping ended at a rung: it has interim metrics only, and is never ranked
STATUS_STOPPED = "stopped"


def stopped_early(result: Mapping[str, Any]) -> bool:
    """Whether a trial's (last) result is where early stopping ended it: marked done by Tune, and not the
    trainable's final report (a trial that finishes always sends :attr:`ResultKey.FINAL`)."""
    return bool(result.get(ResultKey.DONE)) and not result.get(ResultKey.FINAL)


def tag(name: str) -> str:
    """The MLflow tag ``sl2o.<name>``."""
    return f"{TAG}.{name}"


# -- outcomes -------------------------------------------------------------------------------------------------
@dataclass
class TrialOutput:
    """One finished trial of a stage: its identity, MLflow run, metrics and local artifact directory."""

    run_id: str
    config: dict[str, Any]
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: Path | None

    def tag(self, name: str, default: str = "?") -> str:
        """The value of tag ``sl2o.<name>``."""
        return self.tags.get(tag(name), default)


@dataclass
class StageOutcome:
    """A finished (or reused) stage: its trials and whatever its finalize step added to ``extra``."""

    name: str
    kind: str
    key: str
    run_id: str
    reused: bool
    trials: list[TrialOutput] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteOutcome:
    """Every stage of a suite run, in order, and where it was tracked."""

    suite: str
    run_id: str
    tracking_uri: str
    experiment_id: str
    stages: dict[str, StageOutcome]
    seconds: float


# -- finding what earlier stages produced ---------------------------------------------------------------------
def trial_files(outcome: StageOutcome, name: str) -> list[tuple[TrialOutput, Path]]:
    """``(trial, path)`` for every finished trial of ``outcome`` whose artifacts hold ``name``."""
    out = []
    for t in outcome.trials:
        if t.artifacts is not None and (t.artifacts / name).exists():
            out.append((t, t.artifacts / name))
    return out


def teacher_trials(outcome: StageOutcome) -> list[tuple[str, Path, TrialOutput]]:
    """``(label, teacher.pt, trial)`` for each meta-trained teacher of a meta_train stage, by label."""
    found = [(f"{t.tag('teacher')}-s{t.tag('seed')}", p, t) for t, p in trial_files(outcome, TEACHER_FILE)]
    if not found:
        raise ValueError(f"stage {outcome.name!r} produced no teacher checkpoints (all its trials failed?)")
    return sorted(found, key=lambda x: x[0])


def teachers_from_stage(outcome: StageOutcome) -> list[tuple[str, Path]]:
    """``(label, teacher.pt)`` for each meta-trained teacher of a meta_train stage."""
    return [(label, path) for label, path, _ in teacher_trials(outcome)]


def did_not_learn(trial: TrialOutput) -> bool:
    """Whether a meta_train trial flagged its teacher as one that did not learn (``sl2o.learned``)."""
    return trial.tag("learned", "true") == "false"


def equations_from_stage(outcome: StageOutcome) -> list[tuple[str, Path]]:
    """``(label, equation file)`` of the update rules a finished stage produced (its kind's ``equations``)."""
    from harness.registry import STAGES

    found = STAGES.get(outcome.kind).equations(outcome)
    if found is None:
        raise ValueError(f"stage {outcome.name!r} is a {outcome.kind} stage, which produces no equations")
    return found


def require_equations(outcome: StageOutcome, found: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """``found`` sorted, or a ValueError naming the stage when it is empty."""
    if not found:
        raise ValueError(f"stage {outcome.name!r} produced no equations (all its trials failed?)")
    return sorted(found)


def optimizers_from_stage(spec: dict[str, Any], outcome: StageOutcome) -> list[dict[str, Any]]:
    """Concrete teacher/symbolic optimizer configs for ``{family, from_stage}`` entries."""
    family = spec["family"]
    base = {k: v for k, v in spec.items() if k != "name"}
    if family == "teacher":
        found, field = teachers_from_stage(outcome), "checkpoint"
    elif family == "symbolic":
        found, field = equations_from_stage(outcome), "equation"
    else:
        raise ValueError(f"from_stage is only for teacher and symbolic optimizers, not {family!r}")
    return [
        {**base, field: str(path), "name": entry_name(spec.get("name"), label, outcome.name, len(found))}
        for label, path in found
    ]


def tuned_from_stage(stage: str, name: str | None, outcome: StageOutcome) -> dict[str, Any]:
    """The concrete optimizer config an hpo stage chose (``outcome.extra["chosen"]``), named ``name`` (default:
    the stage's name) so that its leaderboard row says where it came from."""
    chosen = outcome.extra.get("chosen")
    if not chosen:
        raise ValueError(f"hpo stage {stage!r} chose no optimizer (no proposal finished)")
    return {**dict(chosen), "name": name or stage}


def entry_name(given: str | None, label: str, stage: str, count: int) -> str:
    """The name an evaluated ``from_stage`` output runs under: the entry's ``name`` when given, suffixed with
    what tells the stage's outputs apart when it gave several (``fast`` -> ``fast-s1``), so that they never
    merge into one leaderboard row; else the output's own label."""
    if not given:
        return label
    if count == 1:
        return given
    return given + label[len(stage) :] if label.startswith(stage) else f"{given}-{label}"


def chosen_equation_text(outcome: SuiteOutcome, unless_in_summary: bool = False) -> str:
    """A few lines naming the equation the suite ended with (its last stage that produced rules); empty when
    there is none, or, with ``unless_in_summary``, when that stage's summary already printed them."""
    from harness.registry import STAGES
    from harness.symbolic.lang import Equation

    for st in reversed(list(outcome.stages.values())):
        kind = STAGES.get(st.kind)
        try:
            eqs = kind.equations(st)
        except ValueError:
            continue
        if eqs is None:
            continue
        if unless_in_summary and kind.summary_shows_equations:
            return ""
        lines = [f"chosen equation ({st.kind} stage {st.name!r}):"]
        for label, path in eqs:
            eq = Equation.load(path)
            fit = ", ".join(f"{k}={v:.4g}" for k, v in sorted(eq.metrics.items()) if k.startswith("r2"))
            short = eq.with_constants([float(f"{c:.4g}") for c in eq.constants])
            lines.append(f"  {label}: update = {short}")
            lines.append(
                f"    complexity {eq.complexity}, features {eq.lags_used()}{', ' + fit if fit else ''}"
            )
            lines.append(f"    file: {path}")
        return "\n".join(lines)
    return ""
