"""The meta_tune stage kind: one trial per equation x seed, tuning its constants on one target optimizee."""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from harness.config import OptimizeeSpec, StageBase, StageRef, Suite
from harness.stages.base import (
    StageKind,
    TrialContext,
    TrialModel,
    TrialResult,
    given,
    settings_fields,
    settings_model,
)
from harness.stages.meta_tune.gradient import meta_tune_gradient
from harness.stages.meta_tune.optuna_search import meta_tune_optuna
from harness.stages.meta_tune.tune import meta_tune, write_outputs
from harness.stages.outputs import EQUATION_FILE, HISTORY_FILE, StageOutcome, equations_from_stage

_NOT_SETTINGS = ("equation", "optimizee", "method", "seed", "device", "method_kwargs", "on_progress")
#: settings each method takes (besides the ones :func:`meta_tune` itself takes)
METHOD_SETTINGS = {
    "gradient": tuple(settings_fields(meta_tune_gradient, _NOT_SETTINGS)),
    "optuna": tuple(settings_fields(meta_tune_optuna, _NOT_SETTINGS)),
}
#: the typed model of a meta_tune stage's ``settings:`` (the keyword parameters of the three functions)
MetaTuneSettings = settings_model(
    "MetaTuneSettings",
    meta_tune,
    meta_tune_gradient,
    meta_tune_optuna,
    what="meta-tuning",
    exclude=_NOT_SETTINGS,
)


class MetaTuneStage(StageBase):
    """Meta-tune the constants of a distilled equation on a target optimizee (gradient or Optuna)."""

    kind: Literal["meta_tune"]
    from_stage: str | None = None
    equation: str | None = None
    optimizee: OptimizeeSpec
    method: Literal["gradient", "optuna"] = "gradient"
    settings: MetaTuneSettings = Field(default_factory=MetaTuneSettings)  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    #: ``cpu``, ``cuda`` or ``auto`` (CUDA when the trial has a GPU), as in evaluate stages
    device: str = "auto"

    @model_validator(mode="after")
    def _source(self) -> MetaTuneStage:
        if (self.equation is None) == (self.from_stage is None):
            raise ValueError("give exactly one of equation (a JSON file) or from_stage (a distill stage)")
        return self

    @model_validator(mode="after")
    def _method_settings(self) -> MetaTuneStage:
        other = "optuna" if self.method == "gradient" else "gradient"
        common = set(settings_fields(meta_tune, _NOT_SETTINGS))
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

    def inputs(self) -> list[StageRef]:
        return [(self.from_stage, ("distill", "meta_tune"))] if self.from_stage else []


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


class MetaTuneKind(StageKind[MetaTuneStage, MetaTuneTrial]):
    """``meta_tune``: tuned equations, kept only when no worse on the validation split (never the test split)."""

    name = "meta_tune"
    spec_model = MetaTuneStage
    trial_model = MetaTuneTrial
    outputs = (EQUATION_FILE, HISTORY_FILE)
    metric = "val_loss_after"
    identity = ("equation", "method", "seed")

    def plan(
        self, suite: Suite, spec: MetaTuneStage, inputs: Mapping[str, StageOutcome]
    ) -> list[MetaTuneTrial]:
        if spec.from_stage:
            equations = [(label, str(p)) for label, p in equations_from_stage(inputs[spec.from_stage])]
        else:
            path = Path(str(spec.equation)).resolve()  # trials run elsewhere: an absolute path
            equations = [(path.stem, str(path))]
        settings = given(spec.settings)
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
        start = time.time()
        if trial.method == "optuna":
            default = inspect.signature(meta_tune_optuna).parameters["n_trials"].default
            ctx.set_total(int(trial.settings.get("n_trials", default)))
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

    def summary_lines(self, spec: MetaTuneStage, outcome: StageOutcome) -> list[str]:
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
        return {
            "equation": trial.label or Path(trial.equation).stem,
            "method": trial.method,
            "seed": str(trial.seed),
        }
