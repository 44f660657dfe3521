"""A stage-kind plug-in used by the tests: ``lr_probe`` trains each optimizee briefly with plain SGD at
several learning rates and records the final loss and a ``probe.json`` artifact per trial.

It is registered only through the ``symbolic_l2o.stages`` entry-point group (see the ``.dist-info``
folder beside this package); nothing in ``harness/`` names it. Its ``report`` hook gives ``sl2o report`` a
panel (final loss against the learning rate), through the same hook the built-in kinds use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from harness.config.suite import OptimizeeSpec, StageBase, Suite
from harness.plotting import auto_yscale, save_figure
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult
from harness.stages.evaluate import train
from harness.stages.outputs import StageOutcome
from harness.stages.problems import build_problem
from harness.stages.views import Panel, StageView, slug

PROBE_FILE = "probe.json"


class LrProbeStage(StageBase):
    """Train every optimizee for ``steps`` SGD steps at every learning rate in ``lrs``."""

    kind: Literal["lr_probe"]
    optimizees: list[OptimizeeSpec] = Field(min_length=1)
    lrs: list[float] = Field(min_length=1)
    steps: int = Field(default=20, gt=0)


class LrProbeTrial(TrialModel):
    optimizee: OptimizeeSpec
    lr: float = Field(gt=0)
    steps: int = Field(gt=0)


class LrProbeKind(StageKind[LrProbeStage, LrProbeTrial]):
    name = "lr_probe"
    spec_model = LrProbeStage
    trial_model = LrProbeTrial
    outputs = (PROBE_FILE,)
    metric = "final_train_loss"
    identity = ("optimizee", "lr")

    def plan(
        self, suite: Suite, spec: LrProbeStage, inputs: Mapping[str, StageOutcome]
    ) -> list[LrProbeTrial]:
        return [
            LrProbeTrial(optimizee=o, lr=lr, steps=spec.steps) for o in spec.optimizees for lr in spec.lrs
        ]

    def run(self, trial: LrProbeTrial, ctx: TrialContext) -> TrialResult:
        # test hook: an environment problem (not an input) that makes one trial fail until it is fixed
        if os.environ.get("SL2O_PROBE_FAIL_LR") == f"{trial.lr:g}":
            raise RuntimeError(f"probe at lr={trial.lr:g} fails while SL2O_PROBE_FAIL_LR is set")
        torch.manual_seed(0)
        problem = build_problem(trial.optimizee, seed=0)
        res = train(
            problem,
            lambda params: (torch.optim.SGD(params, lr=trial.lr), None),
            trial.steps,
            log_every=5,
            on_log=lambda step, loss, _mean: ctx.progress(step, train_loss=loss),
        )
        path = ctx.outdir / PROBE_FILE
        path.write_text(json.dumps({"lr": trial.lr, "curve": res.curve_loss}))
        return TrialResult(
            {"final_train_loss": res.final_train_loss}, status=res.status, files={PROBE_FILE: path}
        )

    def trial_tags(self, trial: LrProbeTrial) -> dict[str, str]:
        return {"optimizee": trial.optimizee.display(), "lr": f"{trial.lr:g}"}

    def report(self, view: StageView, out: Path) -> list[Panel]:
        """Final train loss against the learning rate, one line per optimizee (from each trial's probe.json)."""
        from matplotlib.figure import Figure

        lines: dict[str, list[tuple[float, float]]] = {}
        for t in view.trials:
            path = view.download(t.run_id, PROBE_FILE)
            if path is None:
                continue
            probe = json.loads(path.read_text())
            lines.setdefault(t.tag("optimizee", "?"), []).append((probe["lr"], probe["curve"][-1]))
        if not lines:
            return []
        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot(1, 1, 1)
        for label, pts in sorted(lines.items()):
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log")
        auto_yscale(ax, [y for pts in lines.values() for _, y in pts])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final train loss")
        ax.legend(fontsize=8)
        return [
            Panel(
                save_figure(fig, out / f"lr_probe_{slug(view.name)}.png"),
                f"Learning-rate probe ({view.name})",
                "Final minibatch train loss of plain SGD after the probe's steps, per learning rate.",
            )
        ]
