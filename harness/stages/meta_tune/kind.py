"""The meta_tune stage kind: one trial per equation x seed, tuning its constants on one target optimizee.

With ``method: optuna`` and ``search: tune`` the Optuna study is spread instead: one trial per Optuna trial,
proposed by Ray Tune's ``OptunaSearch`` (:mod:`~harness.stages.meta_tune.tune_trials`), and the stage's
finalize step selects the best and checks it on the validation split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from harness.config.specs import EarlyStopping, Seeds
from harness.config.suite import OptimizeeSpec, StageBase, StageRef, Suite
from harness.stages.base import (
    SearchSpec,
    StageKind,
    TrialContext,
    TrialModel,
    TrialResult,
    given,
    settings_fields,
)
from harness.stages.meta_tune.settings import (
    IN_TRIAL_ONLY,
    METHOD_SETTINGS,
    NOT_SETTINGS,
    OPTUNA_TRIALS_DEFAULT,
    TUNE,
    MetaTuneSettings,
)
from harness.stages.outputs import (
    EQUATION_FILE,
    HISTORY_FILE,
    STATUS_STOPPED,
    StageOutcome,
    equations_from_stage,
    require_equations,
    trial_files,
)
from harness.stages.views import Panel, StageView


class MetaTuneStage(StageBase):
    """Meta-tune the constants of a distilled equation on a target optimizee (gradient or Optuna)."""

    kind: Literal["meta_tune"]
    from_stage: str | None = None
    equation: str | None = None
    optimizee: OptimizeeSpec
    method: Literal["gradient", "optuna"] = "gradient"
    #: ``in_trial``: an Optuna study runs inside one trial (ask/tell; cheap objectives); ``tune``: each Optuna
    #: trial is its own Ray Tune trial (``OptunaSearch``; spreads over a cluster, ``max_concurrent`` at once)
    search: Literal["in_trial", "tune"] = "in_trial"
    settings: MetaTuneSettings = Field(default_factory=MetaTuneSettings)  # type: ignore[valid-type]
    seeds: Seeds = Field(default_factory=lambda: [0])
    #: ``cpu``, ``cuda`` or ``auto`` (CUDA when the trial has a GPU), as in evaluate stages
    device: str = "auto"
    #: ``search: tune`` only: stop hopeless Optuna trials early (ASHA on the interim objective), as in evaluate
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _source(self) -> MetaTuneStage:
        if (self.equation is None) == (self.from_stage is None):
            raise ValueError("give exactly one of equation (a JSON file) or from_stage (a distill stage)")
        return self

    @model_validator(mode="after")
    def _method_settings(self) -> MetaTuneStage:
        other = "optuna" if self.method == "gradient" else "gradient"
        common = set(settings_fields(TUNE, NOT_SETTINGS))
        wrong = sorted(
            k
            for k in given(self.settings)
            if k in METHOD_SETTINGS[other] and k not in common and k not in METHOD_SETTINGS[self.method]
        )
        if wrong:
            raise ValueError(
                f"settings {', '.join(wrong)} are for method {other!r}, not {self.method!r}; "
                f"{self.method} takes: {', '.join(sorted(common | set(METHOD_SETTINGS[self.method])))}"
            )
        return self

    @model_validator(mode="after")
    def _search(self) -> MetaTuneStage:
        if self.search != "tune":
            if self.early_stopping is not None:
                raise ValueError(
                    "early_stopping stops Optuna trials run as Ray Tune trials: it needs method: optuna and "
                    "search: tune"
                )
            return self
        if self.method != "optuna":
            raise ValueError(
                "search: tune spreads an Optuna study over Ray Tune trials; it needs method: optuna "
                "(gradient meta-tuning already runs one trial per equation and seed)"
            )
        if len(self.seeds) != 1:
            raise ValueError(
                f"search: tune runs one Optuna study; give one seed (the sampler's), not {self.seeds}; "
                "the objective's seeds go in settings.seeds"
            )
        if self.early_stopping is not None:
            total = objective_steps(self.optimizee, given(self.settings))
            if total is None:
                raise ValueError(
                    f"early_stopping needs the optimizee's horizon in steps; {self.optimizee.display()} gives "
                    f"{'epochs' if self.optimizee.epochs is not None else 'none'} (give steps: N)"
                )
            if self.early_stopping.grace_steps >= total:
                raise ValueError(
                    f"early_stopping.grace_steps ({self.early_stopping.grace_steps}) must be below the steps "
                    f"of one Optuna trial ({total}: steps x the objective's seeds): no trial could be stopped"
                )
        bad = sorted(set(given(self.settings)) & set(IN_TRIAL_ONLY))
        if bad:
            raise ValueError(
                f"settings {', '.join(bad)} are for search: in_trial; with search: tune, "
                "Ray Tune keeps the study in its experiment state"
            )
        return self

    def inputs(self) -> list[StageRef]:
        return [(self.from_stage, ("distill", "meta_tune"))] if self.from_stage else []


#: the interim value a search trial reports (what early stopping compares): the mean over the objective's seeds
#: trained so far of their window-mean training loss; it ends as the objective
INTERIM_OBJECTIVE = "interim_objective"


def objective_steps(optimizee: OptimizeeSpec, settings: Mapping[str, Any]) -> int | None:
    """The training steps of one search trial's objective: the optimizee's steps times the objective's seeds
    (``settings.seeds``, else the stage's one seed); None when the horizon is not in steps."""
    if optimizee.steps is None:
        return None
    seeds = settings.get("seeds")
    return int(optimizee.steps) * (len(seeds) if seeds else 1)


class MetaTuneTrial(TrialModel):
    """One meta-tuning run: an equation file, the target optimizee, the method and its settings."""

    equation: str
    #: a short name of the equation (its source stage and teacher)
    label: str = ""
    optimizee: OptimizeeSpec
    method: Literal["gradient", "optuna"] = "gradient"
    seed: int = 0
    settings: dict[str, Any] = Field(default_factory=dict)
    device: str = "auto"
    #: ``search: tune``: the Optuna parameters this trial evaluates (None: a whole meta-tuning run)
    search_params: dict[str, float] | None = None
    #: ``search: tune``: the Optuna trial number
    search_index: int | None = None


class MetaTuneKind(StageKind[MetaTuneStage, MetaTuneTrial]):
    """``meta_tune``: tuned equations, kept only when no worse on the validation split (never the test split)."""

    name = "meta_tune"
    spec_model = MetaTuneStage
    trial_model = MetaTuneTrial
    outputs = (EQUATION_FILE, HISTORY_FILE)
    metric = "val_loss_after"
    identity = ("equation", "method", "seed")
    interim_metric = INTERIM_OBJECTIVE

    def equations(self, outcome: StageOutcome) -> list[tuple[str, Path]]:
        """Each trial's tuned equation; for a search run as Tune trials, its selected equation per source."""
        if outcome.extra.get("chosen"):
            return sorted((f"{outcome.name}-{src}", Path(p)) for src, p in outcome.extra["chosen"].items())
        found = [(f"{outcome.name}-s{t.tag('seed')}", p) for t, p in trial_files(outcome, EQUATION_FILE)]
        return require_equations(outcome, found)

    def report(self, view: StageView, out: Path) -> list[Panel]:
        from harness.stages.meta_tune.report import meta_tune_panels  # matplotlib: only to draw

        return meta_tune_panels(view, out)

    def min_trials(self, spec: MetaTuneStage) -> int:
        if spec.search == "tune":  # one trial per Optuna trial
            return int(given(spec.settings).get("n_trials") or OPTUNA_TRIALS_DEFAULT)
        return len(spec.seeds)  # x equations (at least one)

    def plan(
        self, suite: Suite, spec: MetaTuneStage, inputs: Mapping[str, StageOutcome]
    ) -> list[MetaTuneTrial]:
        if spec.from_stage:
            equations = [(label, str(p)) for label, p in equations_from_stage(inputs[spec.from_stage])]
        else:
            path = Path(str(spec.equation)).resolve()  # trials run elsewhere: an absolute path
            equations = [(path.stem, str(path))]
        settings = given(spec.settings)
        if spec.search == "tune" and len(equations) != 1:
            raise ValueError(
                f"search: tune tunes one equation, but stage {spec.from_stage!r} gives {len(equations)} "
                f"({', '.join(label for label, _ in equations)}); use search: in_trial for several"
            )
        return [
            MetaTuneTrial(
                equation=eq,
                label=label,
                optimizee=spec.optimizee,
                method=spec.method,
                seed=s,
                settings=settings,
                device=spec.device,
            )
            for label, eq in equations
            for s in spec.seeds
        ]

    def run(self, trial: MetaTuneTrial, ctx: TrialContext) -> TrialResult:
        # torch, optuna: imported when a trial runs, not to validate a suite
        from harness.stages.meta_tune.tune import meta_tune, write_outputs
        from harness.stages.meta_tune.tune_trials import evaluate_point

        start = time.time()
        if trial.search_params is not None:  # one point of a search run as Tune trials
            task = self.trial_task(trial)
            if task is not None:
                ctx.set_total(task[1])
            result = evaluate_point(
                trial, ctx.outdir, lambda step, value: ctx.progress(step, **{INTERIM_OBJECTIVE: value})
            )
            result.metrics["seconds"] = time.time() - start
            return result
        if trial.method == "optuna":
            ctx.set_total(int(trial.settings.get("n_trials", OPTUNA_TRIALS_DEFAULT)))
        result = meta_tune(
            Path(trial.equation),
            trial.optimizee.model_dump(exclude_none=True),
            method=trial.method,
            seed=trial.seed,
            device=trial.device,
            on_progress=lambda step, value: ctx.progress(step, objective=value),
            **trial.settings,
        )
        files = write_outputs(result, ctx.outdir)
        metrics = {k: float(v) for k, v in result.summary().items() if isinstance(v, int | float)}
        metrics["seconds"] = time.time() - start
        return TrialResult(metrics, files=files)

    def search(self, spec: MetaTuneStage, trials: list[MetaTuneTrial]) -> SearchSpec | None:
        if spec.search != "tune" or len(trials) != 1:
            return None
        from harness.stages.meta_tune.tune_trials import search_spec

        return search_spec(trials[0])

    def early_stopping(self, spec: MetaTuneStage) -> EarlyStopping | None:
        return spec.early_stopping

    def trial_task(self, trial: MetaTuneTrial) -> tuple[str, int] | None:
        """Every trial of one search is one task (same equation, target and objective)."""
        total = objective_steps(trial.optimizee, trial.settings)
        if trial.method != "optuna" or total is None:
            return None
        return f"{trial.label or Path(trial.equation).stem} on {trial.optimizee.display()}", total

    def searched_trial(self, base: MetaTuneTrial, values: Mapping[str, Any], index: int) -> MetaTuneTrial:
        data = base.model_dump(exclude_unset=True)
        data.update(search_params={k: float(v) for k, v in values.items()}, search_index=int(index))
        return MetaTuneTrial.model_validate(data)

    def finalize(
        self, spec: MetaTuneStage, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]
    ) -> None:
        if spec.search == "tune":
            from harness.stages.meta_tune.tune_trials import select

            select(spec, outcome, outdir, log)

    def summary_lines(self, spec: MetaTuneStage, outcome: StageOutcome) -> list[str]:
        if "chosen" in outcome.extra:
            m = outcome.extra.get("metrics") or {}
            kept = "tuned" if m.get("kept_tuned", 1.0) else "initial (tuning did not help)"
            stopped = sum(1 for t in outcome.trials if t.tag("status") == STATUS_STOPPED)
            return [
                f"Optuna over {len(outcome.trials)} Tune trials"
                + (f" ({stopped} stopped early by ASHA, never the best)" if stopped else "")
                + ", best objective "
                f"{m.get('best_value', float('nan')):.4g}: validation loss "
                f"{m.get('val_loss_before', float('nan')):.4g} -> {m.get('val_loss_after', float('nan')):.4g}, "
                f"kept {kept}"
            ]
        lines = []
        for t in outcome.trials:
            m = t.metrics
            kept = "tuned" if m.get("kept_tuned", 1.0) else "initial (tuning did not help)"
            lines.append(
                f"{t.tag('equation')} s{t.tag('seed')} "
                f"({t.tag('method')}): validation loss {m.get('val_loss_before', float('nan')):.4g} -> "
                f"{m.get('val_loss_after', float('nan')):.4g}, kept {kept}"
            )
        return lines

    def trial_tags(self, trial: MetaTuneTrial) -> dict[str, str]:
        tags = {
            "equation": trial.label or Path(trial.equation).stem,
            "method": trial.method,
            "seed": str(trial.seed),
        }
        if trial.search_index is not None:
            tags["search_index"] = f"#{trial.search_index}"
        return tags
