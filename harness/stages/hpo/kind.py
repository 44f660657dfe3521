"""The hpo stage kind: an Optuna search over one optimizer's hyperparameters on one target, each proposal a
Ray Tune trial, and the best proposal (on the validation split) as the stage's output for evaluate stages.

A suite names the space (``search_spaces/baselines.yaml``: ``adam``, ``sgd``, ``rule``), the target at its
tuning horizon, the tuning seeds and the number of proposals; for ``rule`` the symbolic rule comes from an
earlier distill or meta_tune stage. An evaluate stage then runs the choice as ``{tuned: STAGE}``. The tuning
budget a stage spent (target trainings and steps) is recorded on its run, so methods compare at equal budgets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from harness.config.specs import Seeds
from harness.config.suite import OptimizeeSpec, StageBase, StageRef, Suite
from harness.stages.base import SearchSpec, StageKind, TrialContext, TrialModel, TrialResult
from harness.stages.hpo.names import CONFIG, INDEX, OBJECTIVE, PARAMS
from harness.stages.outputs import StageOutcome, equations_from_stage


def _space(name: str, file: str | None) -> dict[str, Any]:
    from search_spaces import GridError, load_space

    try:
        return load_space(name, file)
    except GridError as err:
        raise ValueError(str(err)) from None


class HpoStage(StageBase):
    """Tune an optimizer's hyperparameters on one target by an Optuna search (each proposal a Tune trial)."""

    kind: Literal["hpo"]
    #: the target, at its tuning horizon (one of steps or epochs)
    optimizee: OptimizeeSpec
    #: a search space of ``space_file`` (default ``search_spaces/baselines.yaml``): ``adam``, ``sgd``, ``rule``
    space: str
    space_file: str | None = None
    #: a ``rule`` space's rule: one equation of a distill or meta_tune stage, or an equation file
    from_stage: str | None = None
    equation: str | None = None
    #: config fields every proposal gets (e.g. ``{nesterov: true}``), besides the space's
    fixed: dict[str, Any] = Field(default_factory=dict)
    #: proposals in all; each trains the target once per tuning seed
    n_trials: int = Field(default=20, ge=1, le=10_000)
    #: the tuning seeds (never the evaluation seeds of the stages that compare the choice)
    seeds: Seeds = Field(default_factory=lambda: [0, 1])
    #: the fraction of the target's training examples held out as the validation split
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    #: what the search minimises: the validation loss at the end of training, or the final training loss
    objective: Literal["val_loss", "final_train_loss"] = "val_loss"
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: int = 0
    device: str = "auto"

    @model_validator(mode="after")
    def _source(self) -> HpoStage:
        family = _space(self.space, self.space_file)["family"]
        has_rule = self.from_stage is not None or self.equation is not None
        if family == "symbolic":
            if (self.from_stage is None) == (self.equation is None):
                raise ValueError(
                    f"space {self.space!r} tunes a symbolic rule: give exactly one of from_stage "
                    "(a distill or meta_tune stage) or equation (a JSON file)"
                )
        elif has_rule:
            raise ValueError(f"space {self.space!r} tunes {family}; from_stage/equation are for rule spaces")
        for key in ("family", "equation", "name"):
            if key in self.fixed:
                raise ValueError(f"fixed.{key} is set by the stage, not by fixed:")
        return self

    def inputs(self) -> list[StageRef]:
        return [(self.from_stage, ("distill", "meta_tune"))] if self.from_stage else []

    def family(self) -> str:
        """The optimizer family the space tunes."""
        return str(_space(self.space, self.space_file)["family"])

    def budget(self, proposals: int | None = None) -> dict[str, float]:
        """The tuning budget ``proposals`` (default: ``n_trials``) spend on the target: trainings and steps
        (steps only when the horizon is given in steps)."""
        trainings = (self.n_trials if proposals is None else proposals) * len(self.seeds)
        out = {"tuning_trainings": float(trainings)}
        if self.optimizee.steps is not None:
            out["tuning_steps"] = float(trainings * self.optimizee.steps)
        return out


class HpoTrial(TrialModel):
    """One proposal: the base config, the space, the target and the values the search proposed."""

    optimizee: OptimizeeSpec
    base: dict[str, Any]
    space: str
    space_file: str | None = None
    seeds: list[int]
    val_fraction: float = 0.2
    objective: str = "val_loss"
    device: str = "auto"
    search_params: dict[str, Any] | None = None
    search_index: int | None = None


class HpoKind(StageKind[HpoStage, HpoTrial]):
    """``hpo``: the best of an Optuna search over an optimizer's hyperparameters, chosen on validation runs."""

    name = "hpo"
    spec_model = HpoStage
    trial_model = HpoTrial
    metric = OBJECTIVE
    identity = ("base", "search_params")

    def min_trials(self, spec: HpoStage) -> int:
        return spec.n_trials

    def plan(self, suite: Suite, spec: HpoStage, inputs: Mapping[str, StageOutcome]) -> list[HpoTrial]:
        base: dict[str, Any] = {"family": spec.family(), **spec.fixed}
        if spec.from_stage is not None:
            found = equations_from_stage(inputs[spec.from_stage])
            if len(found) != 1:
                raise ValueError(
                    f"hpo stage {spec.name!r} tunes one rule, but stage {spec.from_stage!r} gives {len(found)} "
                    f"({', '.join(label for label, _ in found)}); give it a stage with one (choose: best)"
                )
            base["equation"] = str(Path(found[0][1]).resolve())
        elif spec.equation is not None:
            base["equation"] = str(Path(spec.equation).resolve())
        return [
            HpoTrial(
                optimizee=spec.optimizee,
                base=base,
                space=spec.space,
                space_file=spec.space_file,
                seeds=list(spec.seeds),
                val_fraction=spec.val_fraction,
                objective=spec.objective,
                device=spec.device,
            )
        ]

    def run(self, trial: HpoTrial, ctx: TrialContext) -> TrialResult:
        from harness.stages.hpo.objective import evaluate_config, tuning_target
        from harness.stages.hpo.space import proposal_config
        from harness.stages.problems import resolve_device

        start = time.time()
        values = dict(trial.search_params or {})
        config = proposal_config(trial.base, _space(trial.space, trial.space_file), values)
        # no interim reports: Ray Tune's searcher takes every result of a searched trial for a final one and
        # refuses a result without the search's metric
        metrics: dict[str, float] = evaluate_config(
            config,
            tuning_target(trial.optimizee.model_dump(exclude_none=True), trial.val_fraction),
            trial.seeds,
            objective=trial.objective,
            device=resolve_device(trial.device),
        )
        metrics[INDEX] = float(trial.search_index or 0)
        metrics["seconds"] = time.time() - start
        info = {
            PARAMS: json.dumps(values, sort_keys=True),
            CONFIG: json.dumps(config, sort_keys=True),
        }
        return TrialResult(metrics, info=info)

    def search(self, spec: HpoStage, trials: list[HpoTrial]) -> SearchSpec | None:
        from harness.stages.hpo.space import distributions
        from harness.stages.meta_tune.optuna_search import make_sampler

        space = _space(spec.space, spec.space_file)
        dists = distributions(space)
        if not dists:
            raise ValueError(f"search space {spec.space!r} samples nothing: give a range or choices")
        start = {k: v for k, v in space["start"].items() if k in dists}
        # the one sampler definition (meta_tune's Optuna searches use it too)
        sampler = make_sampler(spec.sampler, spec.sampler_seed, spec.n_trials)
        return SearchSpec(
            base=trials[0],
            space=dists,
            num_samples=spec.n_trials,
            metric=OBJECTIVE,
            mode="min",
            sampler=sampler,
            start=[start] if start else [],
        )

    def searched_trial(self, base: HpoTrial, values: Mapping[str, Any], index: int) -> HpoTrial:
        data = base.model_dump(exclude_unset=True)
        data.update(search_params=dict(values), search_index=int(index))
        return HpoTrial.model_validate(data)

    def finalize(
        self, spec: HpoStage, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]
    ) -> None:
        from harness.stages.hpo.select import select

        select(spec, outcome, outdir, log)

    def summary_lines(self, spec: HpoStage, outcome: StageOutcome) -> list[str]:
        chosen = outcome.extra.get("chosen")
        if not chosen:
            return ["no proposal finished: nothing chosen"]
        from harness.training.labels import optimizer_label

        m = outcome.extra.get("metrics") or {}
        shown = {k: v for k, v in chosen.items() if k != "equation"}
        return [
            f"best of {int(m.get('n_trials', 0))} proposals ({int(m.get('tuning_trainings', 0))} target "
            f"trainings): {optimizer_label(shown)}, {spec.objective} {m.get('best_objective', float('nan')):.4g}"
        ]

    def trial_tags(self, trial: HpoTrial) -> dict[str, str]:
        tags = {"family": str(trial.base.get("family")), "space": trial.space}
        if trial.search_index is not None:
            tags["search_index"] = f"#{trial.search_index}"
        return tags
