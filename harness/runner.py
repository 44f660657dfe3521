"""Ray Tune glue: one ``Tuner`` per stage, resources, retries, resume, progress, stage reuse.

The stage functions themselves (``harness.stages``) are pure; this module wraps each as a Tune
trainable, expands its trial grid with ``tune.grid_search``, and hands results to MLflow through
``harness.tracking.TrialTracker``. A rerun of the same suite reuses finished stages (found in MLflow
by their config hash) and resumes an interrupted stage with ``Tuner.restore``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from harness import __version__, tracking
from harness.config import Resources, StageBase, Suite
from harness.jsonio import flatten_params
from harness.registry import STAGES
from harness.stages.base import StageKind
from harness.stages.outputs import TAG, ResultKey, StageOutcome, SuiteOutcome, TrialOutput

__all__ = [
    "RunOptions",
    "StageOutcome",
    "SuiteInterrupted",
    "SuiteOutcome",
    "TrialOutput",
    "init_ray",
    "run_suite",
]


class SuiteInterrupted(RuntimeError):
    """A stage stopped before all its trials finished (Ctrl-C); rerunning resumes it."""


# ---------------------------------------------------------------------------------------------
# options and outcomes
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    """How to run a suite: where Ray and MLflow are, where Tune keeps its state."""

    address: str | None = None
    tracking_uri: str | None = None
    workdir: str = "sl2o_runs"
    quiet: bool = False
    log: Callable[[str], None] = print


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def init_ray(address: str | None = None) -> None:
    """Local Ray without the dashboard by default; a cluster with ``address`` or ``RAY_ADDRESS``."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    quiet_tune_output()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=True,
            logging_level=logging.WARNING,
        )


def quiet_tune_output() -> None:
    """Our own progress lines replace Tune's tables; results go to JSON/CSV files and MLflow only."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def trial_resources(res: Resources) -> dict[str, float]:
    """Per-trial resources, asking for GPUs only where the cluster has them (else a request waits forever)."""
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    gpus = res.gpus_per_trial if cluster_gpus > 0 else 0.0
    return {"cpu": float(res.cpus_per_trial), "gpu": float(gpus)}


class _TrialTags:
    """``trial config -> MLflow tags`` for a stage kind (picklable: Tune saves it with its callbacks)."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        trial = config["trial"]
        tags = {f"{TAG}.{k}": str(v) for k, v in self.kind.trial_tags(trial).items()}
        identity = trial.model_dump(mode="json", include=set(self.kind.identity) or None)
        tags[f"{TAG}.config"] = json.dumps(identity, sort_keys=True, default=str)
        # a readable run name: the trial's short facts (``quadratic_cos sgd(lr=0.1) 0``)
        tags[f"{TAG}.label"] = _TrialLabel(self.kind)(config)
        return tags


class _TrialLabel:
    """``trial config -> short label`` (its tags' values) for progress lines and run names."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> str:
        tags = self.kind.trial_tags(config["trial"])
        return " ".join(v for k, v in tags.items() if k != "optimizer_family")


class _TrialParams:
    """``trial config -> MLflow params`` for a stage kind."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        return flatten_params(self.kind.trial_params(config["trial"]))


def _trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: its id (the default folder name repeats the config, here an object)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def stage_key(stage: StageBase, inputs: dict[str, StageOutcome]) -> str:
    """Hash of the stage's config, its input stages' keys and the harness version."""
    payload = {
        "stage": stage.model_dump(mode="json", exclude={"max_concurrent"}),
        "inputs": sorted((k, v.key) for k, v in inputs.items()),
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
class Progress(tune.Callback):
    """Prints ``[stage] done/total trials, errors, elapsed`` as trials finish."""

    def __init__(
        self,
        stage: str,
        total: int,
        log: Callable[[str], None],
        label: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.stage, self.total, self.log, self.label = stage, total, log, label
        self.done = self.errors = 0
        self.start = time.time()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["log"] = print
        return state

    def _line(self, what: str) -> None:
        el = time.time() - self.start
        self.log(
            f"[{self.stage}] {self.done + self.errors}/{self.total} trials done"
            f"{f', {self.errors} errored' if self.errors else ''}, {el:.0f}s elapsed ({what})"
        )

    def _name(self, trial: Any) -> str:
        try:
            return self.label(trial.config) if self.label is not None else str(trial)
        except Exception:  # noqa: BLE001 - a label is a nicety; never break progress over it
            return str(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        self._line(self._name(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.errors += 1
        self._line(f"{self._name(trial)} errored")


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _stage_outputs(client: Any, experiment_id: str, stage_run_id: str, dest: Path) -> list[TrialOutput]:
    """Finished trials of a stage run, with artifacts downloaded (or located) under ``dest``."""
    runs = tracking.find_runs(
        client,
        [experiment_id],
        f"tags.`mlflow.parentRunId` = '{stage_run_id}' and tags.`{TAG}.kind` = 'trial' "
        "and attributes.status = 'FINISHED'",
    )
    out = []
    for r in runs:
        art: Path | None = None
        if client.list_artifacts(r.info.run_id):
            local = dest / r.info.run_id
            if not local.exists():
                local.mkdir(parents=True)
                client.download_artifacts(r.info.run_id, "", str(local))
            art = local
        cfg = json.loads(r.data.tags.get(f"{TAG}.config", "{}"))
        out.append(TrialOutput(r.info.run_id, cfg, dict(r.data.tags), dict(r.data.metrics), art))
    return out


def run_stage(
    suite: Suite,
    stage: Any,
    inputs: dict[str, StageOutcome],
    ctx: dict[str, Any],
    opts: RunOptions,
) -> StageOutcome:
    """Run (or reuse, or resume) one stage as a Ray Tune experiment."""
    client = ctx["client"]
    exp_id = ctx["experiment_id"]
    key = stage_key(stage, inputs)
    art_cache = Path(opts.workdir).resolve() / "artifacts" / suite.name / f"{stage.name}-{key}"
    done = tracking.completed_stage_run(client, exp_id, key)
    if done is not None:
        trials = _stage_outputs(client, exp_id, done.info.run_id, art_cache)
        opts.log(f"[{stage.name}] reusing finished stage (run {done.info.run_id}, {len(trials)} trials)")
        outcome = StageOutcome(stage.name, stage.kind, key, done.info.run_id, True, trials)
        _finalize(stage, outcome, ctx, art_cache, fresh=False, opts=opts)
        return outcome

    from harness.trainable import run_trial

    start = time.time()
    kind = STAGES.get(stage.kind)
    trials = kind.plan(suite, stage, inputs)
    n_trials = len(trials)
    tune_dir = Path(opts.workdir).resolve() / "tune" / suite.name
    exp_name = f"{stage.name}-{key}"
    exp_path = tune_dir / exp_name
    # a stage run with this key that did not complete is an interrupted one: continue it
    prev = tracking.find_runs(
        client, [exp_id], f"tags.`{TAG}.stage_key` = '{key}' and tags.`{TAG}.kind` = 'stage'"
    )
    if prev:
        stage_run_id = prev[0].info.run_id
        client.update_run(stage_run_id, status="RUNNING")
        stale = tracking.close_stale_trial_runs(client, exp_id, key)
        opts.log(f"[{stage.name}] resuming an interrupted stage ({stale} unfinished trial runs closed)")
    else:
        stage_run_id = tracking.start_run(
            client,
            exp_id,
            stage.name,
            {
                f"{TAG}.kind": "stage",
                f"{TAG}.suite": suite.name,
                f"{TAG}.stage": stage.name,
                f"{TAG}.stage_kind": stage.kind,
                f"{TAG}.stage_key": key,
            },
            ctx["suite_run_id"],
        )
        tracking.log_batch(client, stage_run_id, params=tracking.flatten(stage.model_dump(mode="json")))

    res = stage.resources or suite.resources
    trainable = tune.with_resources(run_trial, trial_resources(res))
    param_space = {"kind": kind.name, "trial": tune.grid_search(trials)}
    if tune.Tuner.can_restore(str(exp_path)):
        opts.log(f"[{stage.name}] restoring Tune experiment {exp_path}")
        # the trial models are object references to Tune: its saved state keeps placeholders for them,
        # so the same param space is handed back (Tune requires its structure to be unchanged)
        tuner = tune.Tuner.restore(
            str(exp_path), trainable, resume_unfinished=True, resume_errored=True, param_space=param_space
        )
    else:
        tracker = tracking.TrialTracker(
            ctx["tracking_uri"],
            exp_id,
            stage_run_id,
            {
                f"{TAG}.suite": suite.name,
                f"{TAG}.stage": stage.name,
                f"{TAG}.stage_kind": stage.kind,
                f"{TAG}.stage_key": key,
            },
            _TrialTags(kind),
            _TrialParams(kind),
        )
        max_failures = stage.max_failures if stage.max_failures is not None else suite.max_failures
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
                max_concurrent_trials=stage.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=exp_name,
                storage_path=str(tune_dir),
                failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                callbacks=[
                    JsonLoggerCallback(),
                    CSVLoggerCallback(),
                    tracker,
                    Progress(stage.name, n_trials, opts.log, _TrialLabel(kind)),
                ],
                verbose=0,
            ),
        )
    opts.log(f"[{stage.name}] {n_trials} trials ({stage.kind}); Tune state in {exp_path}")
    grid = tuner.fit()
    errors = grid.num_errors
    # a trial is done when its last report is the trainable's final one (Tune may call a trial stopped
    # by Ctrl-C "terminated"); anything less means the stage was interrupted
    finished = sum(1 for r in grid if r.error is None and (r.metrics or {}).get(ResultKey.FINAL))
    if finished + errors < n_trials:
        # Tune returns normally after SIGINT; the stage is unfinished and must not be marked complete
        client.set_terminated(stage_run_id, status="KILLED")
        raise SuiteInterrupted(
            f"stage {stage.name!r} was interrupted after {finished}/{n_trials} trials; "
            "rerun the same command to resume it"
        )
    trials = _stage_outputs(client, exp_id, stage_run_id, art_cache)
    secs = time.time() - start
    outcome = StageOutcome(stage.name, stage.kind, key, stage_run_id, False, trials, errors, secs)
    _finalize(stage, outcome, ctx, art_cache, fresh=True, opts=opts)
    client.set_tag(stage_run_id, f"{TAG}.complete", "true")
    client.set_tag(stage_run_id, f"{TAG}.errors", str(errors))
    client.set_terminated(stage_run_id, status="FINISHED")
    opts.log(f"[{stage.name}] finished: {len(trials)} trials ok, {errors} errored, {secs:.1f}s")
    return outcome


def _finalize(
    stage: Any, outcome: StageOutcome, ctx: dict[str, Any], art_cache: Path, fresh: bool, opts: RunOptions
) -> None:
    """Stage-level post-processing (e.g. merging a distill stage's fronts) and its artifacts."""
    outdir = art_cache / "stage"
    outdir.mkdir(parents=True, exist_ok=True)
    STAGES.get(stage.kind).finalize(stage, outcome, outdir, opts.log)
    if fresh and any(outdir.iterdir()):
        ctx["client"].log_artifacts(outcome.run_id, str(outdir))


def run_suite(suite: Suite, opts: RunOptions) -> SuiteOutcome:
    """Run every stage of ``suite`` in order; rerunning the same command resumes or reuses stages."""
    quiet_tune_output()
    start = time.time()
    uri = tracking.resolve_tracking_uri(opts.tracking_uri, opts.workdir)
    client = tracking.init_tracking(uri)
    exp_id = tracking.ensure_experiment(client, suite.name, uri)
    init_ray(opts.address)
    suite_run_id = tracking.start_run(
        client,
        exp_id,
        f"suite {suite.name}",
        {
            f"{TAG}.kind": "suite",
            f"{TAG}.suite": suite.name,
            f"{TAG}.metric": suite.metric.name,
            f"{TAG}.mode": suite.metric.mode,
        },
    )
    opts.log(f"suite {suite.name!r}: {len(suite.stages)} stage(s); MLflow {uri} (experiment {exp_id})")
    ctx = {"client": client, "experiment_id": exp_id, "suite_run_id": suite_run_id, "tracking_uri": uri}
    outcomes: dict[str, StageOutcome] = {}
    try:
        for stage in suite.stages:
            outcomes[stage.name] = run_stage(suite, stage, dict(outcomes), ctx, opts)
            client.set_tag(suite_run_id, f"{TAG}.stage_keys", ",".join(o.key for o in outcomes.values()))
            client.set_tag(suite_run_id, f"{TAG}.stage_runs", ",".join(o.run_id for o in outcomes.values()))
    except BaseException:
        client.set_terminated(suite_run_id, status="KILLED")
        raise
    client.set_terminated(suite_run_id, status="FINISHED")
    return SuiteOutcome(suite.name, suite_run_id, uri, exp_id, outcomes, time.time() - start)
