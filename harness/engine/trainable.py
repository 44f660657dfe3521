"""The one Ray Tune trainable: it runs any registered stage kind's trial and reports it to Tune.

The param space of a stage is ``{"kind": name, "trial": tune.grid_search([trial models])}``; this module
validates the trial model again on entry, gives the kind a :class:`TuneContext` (progress in batches,
checkpoints through Tune so a retried trial resumes), and turns the kind's :class:`TrialResult` into the
final report the tracker reads (keys from :mod:`harness.stages.outputs`). It does not import the runner.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from pydantic import BaseModel
from ray import tune
from ray.tune import Checkpoint

from harness.cluster import localize_inputs
from harness.registry import STAGES
from harness.stages.base import TrialResult
from harness.stages.outputs import ARTIFACTS_DIR, TRAINER_FILE, CostKey, ResultKey

#: how often (seconds) a running trial streams its new curve points to the tracker
CURVE_FLUSH_S = 5.0


def set_trial_threads() -> int:
    """Torch intra-op threads = the CPUs Ray gave this trial (avoids oversubscription)."""
    cpus = 1
    try:
        res = tune.get_context().get_trial_resources()
        cpus = max(1, int(sum(b.get("CPU", 0) for b in res.bundles) or 1))
    except Exception:  # noqa: BLE001 - outside a Tune trial
        cpus = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.set_num_threads(cpus)
    return cpus


class TuneContext:
    """The :class:`harness.stages.base.TrialContext` of a trial running under Ray Tune.

    Curve points go to Tune in batches (every :data:`CURVE_FLUSH_S`). With ``early_stopping`` (the stage's
    ``param_space["early_stopping"]``: ``grace_steps``, ``reduction_factor``, ``metric``), it also reports at
    the first log point at or past each of ASHA's rungs (:func:`harness.engine.early_stopping.milestones`,
    computed when :meth:`set_total` gives the trial's steps): ``step``, ``total_steps`` and the latest progress
    values, so the scheduler sees every rung without a report per log point; with ``cost`` (the trial's
    :class:`TrialCost`), also the cost so far, so a trial stopped at a rung records what it spent. A trial a
    search proposed (``search_metric``: the searcher's metric and the kind's interim metric) carries the
    interim metric's latest value under the searcher's metric name in every interim report.
    """

    def __init__(
        self,
        outdir: Path,
        cpus: int,
        early_stopping: Mapping[str, Any] | None = None,
        cost: TrialCost | None = None,
        search_metric: tuple[str, str] | list[str] | None = None,
    ) -> None:
        self.outdir = outdir
        #: the trial's cost meter: a rung report carries the cost so far, so a trial stopped there has one
        self.cost = cost
        self.cpus = cpus
        self._steps: list[int] = []
        self._values: dict[str, list[float]] = {}
        self._last_flush = time.time()
        self._total: int | None = None
        self._early_stopping = dict(early_stopping) if early_stopping else None
        #: the rungs not reported yet, ascending
        self._milestones: list[float] = []
        #: ``(search metric, interim metric)`` of a searched trial: Tune asks every report of it for the search
        #: metric, so the interim metric's latest value stands in for it until the final report
        self._mirror = (str(search_metric[0]), str(search_metric[1])) if search_metric else None

    def set_total(self, total: int) -> None:
        from harness.engine.early_stopping import milestones

        self._total = int(total)
        if self._early_stopping is not None:
            es = self._early_stopping
            self._milestones = milestones(int(es["grace_steps"]), float(es["reduction_factor"]), self._total)

    def pending_curves(self) -> dict[str, Any]:
        """The curve points not reported yet, as ``curve_*`` result keys (and forget them)."""
        if not self._steps:
            return {}
        out: dict[str, Any] = {ResultKey.CURVE_STEPS: list(self._steps)}
        for k, v in self._values.items():
            out[f"{ResultKey.CURVE_PREFIX}{k}"] = list(v)
        self._steps.clear()
        self._values = {k: [] for k in self._values}
        self._last_flush = time.time()
        return out

    def _at_rung(self, step: int) -> bool:
        """Whether ``step`` reaches a rung not reported yet (before the trial's end: a rung there stops nothing);
        the rungs it reaches are then reported."""
        if not self._milestones or self._total is None or step >= self._total or step < self._milestones[0]:
            return False
        while self._milestones and self._milestones[0] <= step:
            self._milestones.pop(0)
        return True

    def progress(self, step: int, **values: float) -> None:
        self._steps.append(int(step))
        for k, v in values.items():
            self._values.setdefault(k, []).append(float(v))
        extra: dict[str, Any] = {ResultKey.TOTAL_STEPS: self._total} if self._total else {}
        if self._mirror is not None and self._mirror[1] in values:
            extra[self._mirror[0]] = float(values[self._mirror[1]])
        if self._at_rung(int(step)):
            latest = {k: float(v) for k, v in values.items()}
            report = {**self.pending_curves(), ResultKey.STEP: int(step), **extra, **latest}
            report.update(self._cost_so_far())
            tune.report({**report, ResultKey.INTERIM_KEYS: list(latest)})
        elif time.time() - self._last_flush > CURVE_FLUSH_S:
            tune.report({**self.pending_curves(), ResultKey.STEP: int(step), **extra})

    def _cost_so_far(self) -> dict[str, Any]:
        """The trial's :class:`CostKey` figures up to now, its node included (none without a cost meter)."""
        return {} if self.cost is None else self.cost.read()

    def checkpoint(self, state: Mapping[str, Any], **metrics: float) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(dict(state), Path(tmp) / TRAINER_FILE)
            tune.report({**self.pending_curves(), **metrics}, checkpoint=Checkpoint.from_directory(tmp))

    def restore(self) -> Mapping[str, Any] | None:
        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            path = Path(d) / TRAINER_FILE
            return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def final_report(result: TrialResult, cost: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The last ``tune.report`` of a trial: its metrics (and ``cost``'s, see :class:`CostKey`), status and
    facts, marked final."""
    cost = dict(cost or {})
    node = cost.pop(CostKey.NODE, None)
    metrics = {**result.metrics, **cost}
    return {
        **metrics,
        ResultKey.FINAL: True,
        ResultKey.FINAL_KEYS: list(metrics),
        ResultKey.STATUS: result.status,
        ResultKey.INFO: {**({CostKey.NODE: node} if node else {}), **dict(result.info)},
    }


class TrialCost:
    """Measures a trial's :class:`CostKey` figures from its start to :meth:`read`."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.started = time.time()

    def read(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall0
        out: dict[str, Any] = {
            CostKey.WALL: wall,
            CostKey.CPU: time.process_time() - self.cpu0,
            CostKey.START: self.started,
        }
        try:
            ctx = tune.get_context()
            gpus = sum(b.get("GPU", 0) for b in ctx.get_trial_resources().bundles)
            out[CostKey.NODE] = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - outside a Tune trial
            gpus, out[CostKey.NODE] = 0, socket.gethostname()
        if gpus:
            out[CostKey.GPU] = gpus * wall
        return out


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: run ``config["trial"]`` (a trial model) with the stage kind ``config["kind"]``."""
    kind = STAGES.get(config["kind"])
    trial = config["trial"]
    data = trial.model_dump(exclude_unset=True) if isinstance(trial, BaseModel) else trial
    cost = TrialCost()
    cpus = set_trial_threads()
    with tempfile.TemporaryDirectory(prefix="sl2o-trial-") as tmp:
        # input files staged in a storage URI workdir (harness.cluster.stage_inputs) are copied here first
        data = localize_inputs(data, Path(tmp) / "inputs")
        checked = kind.trial_model.model_validate(data)  # validated again on the worker
        ctx = TuneContext(
            Path(tmp) / "out", cpus, config.get("early_stopping"), cost, config.get("search_metric")
        )
        ctx.outdir.mkdir()
        result = kind.run(checked, ctx)
        report = {**final_report(result, cost.read()), **ctx.pending_curves()}
        if not result.files:
            tune.report(report)
            return
        ckpt_dir = Path(tmp) / "ckpt"
        art = ckpt_dir / ARTIFACTS_DIR
        art.mkdir(parents=True)
        for name, src in result.files.items():
            if Path(src).is_dir():
                shutil.copytree(src, art / name)
            else:
                shutil.copy2(src, art / name)
        tune.report(report, checkpoint=Checkpoint.from_directory(str(ckpt_dir)))
