"""The ``distill`` stage kind: one trial per backend x seed x maximum complexity x source."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.config.specs import Seeds
from harness.config.suite import StageBase, StageRef, Suite
from harness.registry import SR_BACKENDS
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult, given, settings_model
from harness.stages.outputs import (
    BEST_FILE,
    CHOSEN_FILE,
    DATASET_FILE,
    FRONT_FILE,
    StageOutcome,
    require_equations,
    trial_files,
)
from harness.stages.views import Panel, StageView
from harness.symbolic.sr.settings import SETTING_RANGES, SRSettings

#: the largest complexity a distill trial may search (the paper's largest is 200)
MAX_COMPLEXITY = SETTING_RANGES["max_complexity"][1]

#: the typed model of a distill stage's ``settings:`` (``SRSettings`` minus the grid's seed/complexity)
DistillSettings = settings_model("DistillSettings", SRSettings, what="SR", exclude=("seed", "max_complexity"))


class DistillStage(StageBase):
    """Symbolic regression over backend x seed x maximum complexity; fronts merged, one equation chosen."""

    kind: Literal["distill"]
    from_stage: str
    backends: list[str] = Field(default_factory=lambda: ["operon"], min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0])
    max_complexities: list[Annotated[int, Field(ge=1, le=MAX_COMPLEXITY)]] = Field(
        default_factory=lambda: [20], min_length=1
    )
    settings: DistillSettings = Field(default_factory=DistillSettings)  # type: ignore[valid-type]
    choose: Literal["mc", "best"] | int = "mc"

    @field_validator("backends")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            SR_BACKENDS.require(name)
        return v

    @model_validator(mode="after")
    def _settings(self) -> DistillStage:
        SRSettings.from_dict(given(self.settings))  # the dataclass's own checks (operators, ranges)
        return self

    def inputs(self) -> list[StageRef]:
        return [(self.from_stage, ("collect",))]


class DistillTrial(TrialModel):
    """One SR fit: a backend, a seed and a maximum complexity on one source's dataset file."""

    backend: str
    source: str
    dataset: str
    seed: int
    max_complexity: int = Field(gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    choose: Literal["mc", "best"] | int = "mc"


class DistillKind(StageKind[DistillStage, DistillTrial]):
    """``distill``: Pareto fronts per trial, merged and chosen per source when the stage ends."""

    name = "distill"
    spec_model = DistillStage
    trial_model = DistillTrial
    outputs = (FRONT_FILE, BEST_FILE)
    metric = "best_r2_val"
    mode = "max"
    identity = ("backend", "source", "seed", "max_complexity")
    summary_shows_equations = True
    summary_table = True

    def min_trials(self, spec: DistillStage) -> int:
        return len(spec.backends) * len(spec.seeds) * len(spec.max_complexities)  # x sources (at least one)

    def plan(
        self, suite: Suite, spec: DistillStage, inputs: Mapping[str, StageOutcome]
    ) -> list[DistillTrial]:
        datasets = [(t.tag("source"), str(p)) for t, p in trial_files(inputs[spec.from_stage], DATASET_FILE)]
        if not datasets:
            raise ValueError(f"stage {spec.from_stage!r} produced no datasets; nothing to distill")
        settings = given(spec.settings)
        return [
            DistillTrial(
                backend=b,
                source=src,
                dataset=path,
                seed=seed,
                max_complexity=c,
                settings=settings,
                choose=spec.choose,
            )
            for b in spec.backends
            for seed in spec.seeds
            for c in spec.max_complexities
            for src, path in datasets
        ]

    def run(self, trial: DistillTrial, ctx: TrialContext) -> TrialResult:
        # the SR engines, sympy and torch: imported when a trial runs, not to validate a suite
        from harness.stages.collect.dataset import SRDataset
        from harness.stages.distill.fit import distill, write_outputs

        start = time.time()
        ds = SRDataset.load(trial.dataset)
        settings = {"threads": ctx.cpus, **trial.settings, "max_complexity": trial.max_complexity}
        front = distill(ds, trial.backend, settings, trial.seed, progress=ctx)
        if not len(front):
            raise ValueError(
                f"the {trial.backend} front holds no equation (left out: {front.provenance.get('left_out')}, "
                f"skipped: {front.provenance.get('skipped')}); raise max_complexity ({trial.max_complexity}) "
                "or the search budget"
            )
        files = write_outputs(front, ctx.outdir, ds, how=trial.choose)
        info = {}
        if ds.source.get("learned") is False:
            info["warning"] = (
                f"the dataset's source {ds.source.get('label', '?')!r} is a teacher that did not learn; "
                "its distilled rule describes its initial weights"
            )
        best = max((eq.metrics.get("r2_val", float("-inf")) for eq in front.equations), default=float("nan"))
        metrics = {
            "best_r2_val": float(best),
            "front_size": float(len(front.equations)),
            "seconds": time.time() - start,
        }
        return TrialResult(metrics, files=files, info=info)

    def finalize(
        self, spec: DistillStage, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]
    ) -> None:
        """Merge the trials' fronts per source (teacher) and choose the equation each goes on with."""
        from harness.stages.distill.fit import merge_and_choose

        by_source: dict[str, list[Path]] = {}
        for t, p in trial_files(outcome, FRONT_FILE):
            by_source.setdefault(t.tag("source", "source"), []).append(p)
        if not by_source:
            log(f"[{spec.name}] no fronts to merge (all trials failed?)")
            return
        chosen = {}
        for source, fronts in sorted(by_source.items()):
            sub = outdir / source if len(by_source) > 1 else outdir
            files = merge_and_choose(fronts, spec.choose, sub)
            chosen[source] = str(files[CHOSEN_FILE])
        outcome.extra["chosen"] = chosen

    def summary_lines(self, spec: DistillStage, outcome: StageOutcome) -> list[str]:
        from harness.stages.distill.table import distill_rows, fmt

        lines = []
        for row in distill_rows([Path(p) for p in outcome.extra.get("chosen", {}).values()], spec.name):
            lines.append(f"{row['source']}: update = {row['equation']}")
            per = ", ".join(
                f"{k[4:]} {v:.3g}" for k, v in row.items() if k.startswith("tpf_") and v is not None
            )
            lines.append(
                f"    held-out R² {fmt(row['r2_val'])}, complexity {row['complexity_scaled']} (as fitted; "
                f"{row['complexity']} as printed in raw units), MC {row['mc']}, TPF {fmt(row['tpf'])}"
                + (f" ({per})" if per else "")
                + f", front of {row['front_size']}, input-dependent {fmt(row['input_dependent_fraction'])}"
            )
            if not row["learned"]:
                lines.append("    WARNING: its teacher did not learn (see the meta_train summary)")
        return lines

    def equations(self, outcome: StageOutcome) -> list[tuple[str, Path]]:
        """The chosen equation of each source; before the stage finalized, each trial's best."""
        chosen = outcome.extra.get("chosen") or {}
        if chosen:
            if len(chosen) == 1:
                return [(outcome.name, Path(p)) for p in chosen.values()]
            return sorted((f"{outcome.name}-{src}", Path(p)) for src, p in chosen.items())
        found = [(f"{outcome.name}-{t.run_id[:6]}", p) for t, p in trial_files(outcome, BEST_FILE)]
        return require_equations(outcome, found)

    def summary_rows(self, artifacts: Path, stage: str) -> list[dict[str, Any]]:
        from harness.stages.distill.table import distill_rows

        return distill_rows(sorted(artifacts.rglob(CHOSEN_FILE)), stage)

    def report(self, view: StageView, out: Path) -> list[Panel]:
        from harness.stages.distill.report import distill_panels  # matplotlib: only to draw

        return distill_panels(view, out)

    def trial_tags(self, trial: DistillTrial) -> dict[str, str]:
        return {
            "backend": trial.backend,
            "source": trial.source,
            "seed": str(trial.seed),
            "max_complexity": str(trial.max_complexity),
        }
