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
from pydantic import BaseModel
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from harness import cluster, tracking
from harness.config.suite import Resources, Suite, SuiteError, check_resources
from harness.engine import stagekey
from harness.engine.progress import ClientProgress, Progress
from harness.engine.search import tune_search
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


@dataclass
class TrialFailure:
    """One errored trial: which, why (the error's last line) and where its full log is."""

    label: str
    error: str
    log: str


class StageFailed(RuntimeError):
    """A stage ended with errored trials: it is not finished, and the suite stops after it.

    Rerunning the same command runs only the errored (and any missing) trials of the stage.
    """

    def __init__(self, outcome: StageOutcome, failures: list[TrialFailure]) -> None:
        self.outcome = outcome
        self.failures = failures
        super().__init__(
            f"stage {outcome.name!r}: {len(failures)} of {len(failures) + len(outcome.trials)} trials errored"
        )


class StageInputError(ValueError):
    """A stage cannot be planned from what the earlier stages produced (one clear line)."""


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
    #: names of stages to rerun whole (their earlier runs and Tune state are discarded)
    fresh: frozenset[str] = frozenset()
    #: a live display of running trials (on a terminal); otherwise only progress lines
    live: bool = False
    #: run trials that ask for GPUs on CPUs when the cluster has no GPU (else that is an error)
    allow_cpu_fallback: bool = False


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def init_ray(address: str | None = None) -> None:
    """Local Ray without the dashboard by default; a cluster with ``address`` or ``RAY_ADDRESS``
    (``host:port``, ``auto`` or Ray Client's ``ray://host:10001``). A refused token or an unreachable
    cluster is one :class:`harness.cluster.ClusterError` line (see :func:`harness.cluster.connect`)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    quiet_tune_output()
    if address:
        cluster.connect(address)
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


def trial_resources(
    res: Resources, stage: str = "?", allow_cpu_fallback: bool = False, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Per-trial resources. GPUs are asked only where the cluster has them or its autoscaler can add
    them (a request nothing can meet waits forever); otherwise an error, or CPUs with the fallback."""
    gpus = cluster.gpu_request(res, stage, allow_cpu_fallback, log)
    return {"cpu": float(res.cpus_per_trial), "gpu": float(gpus)}


def trial_key(stage_key: str, trial: BaseModel) -> str:
    """A trial's stable identity: its stage's key and its whole resolved config."""
    blob = json.dumps(trial.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(f"{stage_key}\n{blob}".encode()).hexdigest()[:20]


class _TrialTags:
    """``trial config -> MLflow tags`` for a stage kind (picklable: Tune saves it with its callbacks)."""

    def __init__(self, kind: StageKind[Any, Any], stage_key: str) -> None:
        self.kind = kind
        self.stage_key = stage_key

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        trial = config["trial"]
        short = self.kind.trial_tags(trial)
        tags = {f"{TAG}.{k}": str(v) for k, v in short.items()}
        tags[f"{TAG}.trial_key"] = trial_key(self.stage_key, trial)
        identity = trial.model_dump(mode="json", include=set(self.kind.identity) or None)
        tags[f"{TAG}.config"] = json.dumps(identity, sort_keys=True, default=str)
        # a readable run name: the trial's short facts (``sgd(lr=0.1) · quadratic_cos · 0``)
        tags[f"{TAG}.label"] = _label(short)
        return tags


def _label(short_tags: dict[str, str]) -> str:
    return " · ".join(v for k, v in short_tags.items() if k != "optimizer_family")


class _TrialLabel:
    """``trial config -> short label`` (its tags' values) for progress lines and run names."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> str:
        if "trial" not in config:
            return "?"
        return _label(self.kind.trial_tags(config["trial"]))


class _TrialParams:
    """``trial config -> MLflow params`` for a stage kind."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        return flatten_params(self.kind.trial_params(config["trial"]))


#: the trial keys a Tune experiment was created with, in its folder (a restore needs the same list)
TRIALS_FILE = "sl2o-trials.json"


def _trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: its id (the default folder name repeats the config, here an object)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


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
    kind = STAGES.get(stage.kind)
    try:
        trials = kind.plan(suite, stage, inputs)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise StageInputError(f"stage {stage.name!r} cannot start: {err}") from None
    if not trials:
        raise StageInputError(f"stage {stage.name!r} has no trials to run (check its inputs)")
    # content-addressed: the resolved trials, the files they read, the inputs' keys and the code version
    key = stagekey.stage_key(stage, {k: v.key for k, v in inputs.items()}, trials)
    storage: cluster.Storage = ctx["storage"]
    art_cache = storage.cache / "artifacts" / suite.name / f"{stage.name}-{key}"
    done = None if stage.name in opts.fresh else tracking.completed_stage_run(client, exp_id, key)
    if done is not None:
        trials = _stage_outputs(client, exp_id, done.info.run_id, art_cache)
        opts.log(f"[{stage.name}] reusing finished stage (run {done.info.run_id}, {len(trials)} trials)")
        outcome = StageOutcome(stage.name, stage.kind, key, done.info.run_id, True, trials)
        _finalize(stage, outcome, ctx, art_cache, fresh=False, opts=opts)
        return outcome

    from harness.engine.trainable import run_trial

    start = time.time()
    n_total = len(trials)
    # Tune's state lives in the workdir (a local path or a storage URI): ``exp`` is its place there
    tune_dir = storage.url("tune", suite.name)
    exp_name = f"{stage.name}-{key}"
    exp = ("tune", suite.name, exp_name)
    exp_path = storage.url(*exp)
    # files the trials read travel as storage URIs when the workdir is one (never driver-local paths)
    trials = cluster.stage_inputs(trials, storage)
    if stage.name in opts.fresh:
        n = _forget_stage(client, exp_id, key, storage, exp)
        opts.log(f"[{stage.name}] --fresh: discarded {n} earlier runs and the Tune state of this stage")
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
        tracking.log_batch(client, stage_run_id, params=flatten_params(stage.model_dump(mode="json")))

    res = stage.resources or suite.resources
    trainable = tune.with_resources(
        run_trial, trial_resources(res, stage.name, opts.allow_cpu_fallback, opts.log)
    )
    restore = False
    if tune.Tuner.can_restore(exp_path):
        digest = prev[0].data.tags.get(f"{TAG}.tune_state_digest") if prev else None
        if digest and storage.exists(*exp, TRIALS_FILE):
            with storage.local_view(*exp) as local:
                stagekey.verify_tree(local, digest)  # refuse to unpickle state this harness did not write
            restore = True
        else:
            # a driver killed before it could record the state's digest: do not unpickle that state;
            # run the trials MLflow has no finished record of, in a new Tune experiment
            aside = (*exp[:-1], f"{exp_name}.unverified-{int(time.time())}")
            storage.move(exp, aside)
            opts.log(
                f"[{stage.name}] the Tune state of a killed driver cannot be verified; moved to "
                f"{storage.url(*aside)}"
            )
    if restore:
        # the experiment's own trial list (written when it was created; covered by the digest)
        keys = json.loads(storage.read_text(*exp, TRIALS_FILE))
        by_key = {trial_key(key, t): t for t in trials}
        trials = [by_key[k] for k in keys]
    else:
        finished = tracking.finished_trial_keys(client, exp_id, key)
        trials = [t for t in trials if trial_key(key, t) not in finished]
        if finished:
            opts.log(f"[{stage.name}] {n_total - len(trials)} trials already recorded as finished")
        storage.write_text(json.dumps([trial_key(key, t) for t in trials]), *exp, TRIALS_FILE)
    n_trials = len(trials)
    param_space = {"kind": kind.name, "trial": tune.grid_search(trials)}
    # a kind that searches (meta_tune with search: tune) gets its trials from a search algorithm instead
    search = tune_search(kind, stage, trials)
    if search is not None:
        param_space, n_trials = search.param_space, search.num_samples
    progress: Progress | None = None
    if restore:
        opts.log(f"[{stage.name}] restoring Tune experiment {exp_path}")
        # the trial models are object references to Tune: its saved state keeps placeholders for them,
        # so the same param space is handed back (Tune requires its structure to be unchanged)
        tuner = tune.Tuner.restore(
            exp_path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space
        )
    else:
        tracker = tracking.TrialTracker(
            ctx["tracking_uri"],
            exp_id,
            stage_run_id,
            {
                **ctx["version_tags"],
                f"{TAG}.suite": suite.name,
                f"{TAG}.stage": stage.name,
                f"{TAG}.stage_kind": stage.kind,
                f"{TAG}.stage_key": key,
            },
            _TrialTags(kind, key),
            _TrialParams(kind),
        )
        max_failures = stage.max_failures if stage.max_failures is not None else suite.max_failures
        if cluster.client_mode():  # Ray Client: Tune runs fit (and its callbacks) on the head node
            sink = cluster.ClientLog()
            progress = ClientProgress(stage.name, n_trials, opts.log, _TrialLabel(kind), sink=sink)
        else:
            progress = Progress(stage.name, n_trials, opts.log, _TrialLabel(kind), live=opts.live)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
                max_concurrent_trials=stage.max_concurrent,
                **(search.tune_config if search is not None else {}),
            ),
            run_config=tune.RunConfig(
                name=exp_name,
                storage_path=str(tune_dir),
                failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                callbacks=[
                    JsonLoggerCallback(),
                    CSVLoggerCallback(),
                    tracker,
                    progress,
                ],
                verbose=0,
            ),
        )
    opts.log(f"[{stage.name}] {n_trials} trials ({stage.kind}); Tune state in {exp_path}")
    results: list[Any] = []
    if n_trials:
        # Tune rewrites its state while it runs: a digest from an earlier fit no longer describes it, and
        # a driver killed during this fit must leave state that counts as unverified (set aside, not read)
        if prev and f"{TAG}.tune_state_digest" in prev[0].data.tags:
            client.delete_tag(stage_run_id, f"{TAG}.tune_state_digest")
        try:
            if isinstance(progress, ClientProgress):
                grid = cluster.fit_streaming(tuner.fit, progress.sink, opts.log)
                progress.sink.shutdown()
            else:
                grid = tuner.fit()
        finally:
            if progress is not None:
                progress.stop()
        results = [grid[i] for i in range(len(grid))]
        with storage.local_view(*exp) as local:
            client.set_tag(stage_run_id, f"{TAG}.tune_state_digest", stagekey.digest_tree(local))
    errors = sum(1 for r in results if r.error is not None)
    # a trial is done when its last report is the trainable's final one (Tune may call a trial stopped
    # by Ctrl-C "terminated"); anything less means the stage was interrupted
    finished = sum(1 for r in results if r.error is None and (r.metrics or {}).get(ResultKey.FINAL))
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
    if errors:
        failures = [
            TrialFailure(
                _TrialLabel(kind)(r.config or {}), _last_line(r.error), f"{r.path}/error.txt"
            )
            for r in results
            if r.error is not None
        ]
        client.set_tag(stage_run_id, f"{TAG}.errors", str(errors))
        client.set_terminated(stage_run_id, status="FAILED")
        opts.log(f"[{stage.name}] {errors} of {n_trials} trials errored; the stage is not finished")
        raise StageFailed(outcome, failures)
    _finalize(stage, outcome, ctx, art_cache, fresh=True, opts=opts)
    client.set_tag(stage_run_id, f"{TAG}.complete", "true")
    client.set_tag(stage_run_id, f"{TAG}.errors", str(errors))
    client.set_terminated(stage_run_id, status="FINISHED")
    opts.log(f"[{stage.name}] finished: {len(trials)} trials ok, {errors} errored, {secs:.1f}s")
    return outcome


def _last_line(err: BaseException | None) -> str:
    """The last non-empty line of an error's text (Ray wraps the trial's own exception in a long one)."""
    lines = [line.strip() for line in str(err or "unknown error").splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:300]


def _forget_stage(client: Any, exp_id: str, key: str, storage: cluster.Storage, exp: tuple[str, ...]) -> int:
    """``--fresh``: delete the MLflow runs (stage and trials) and the Tune state of a stage key."""
    runs = tracking.find_runs(client, [exp_id], f"tags.`{TAG}.stage_key` = '{key}'")
    for r in runs:
        client.delete_run(r.info.run_id)
    storage.rmtree(*exp)
    return len(runs)


def _finalize(
    stage: Any, outcome: StageOutcome, ctx: dict[str, Any], art_cache: Path, fresh: bool, opts: RunOptions
) -> None:
    """Stage-level post-processing (e.g. merging a distill stage's fronts) and its artifacts."""
    outdir = art_cache / "stage"
    outdir.mkdir(parents=True, exist_ok=True)
    STAGES.get(stage.kind).finalize(stage, outcome, outdir, opts.log)
    if fresh and any(outdir.iterdir()):
        ctx["client"].log_artifacts(outcome.run_id, str(outdir))
    if fresh and outcome.extra.get("metrics"):  # e.g. a searched meta_tune stage's selection
        tracking.log_batch(
            ctx["client"], outcome.run_id, metrics=tracking.finite_metrics(outcome.extra["metrics"])
        )


def _version_tags() -> dict[str, str]:
    """MLflow's context tags (source, user, git) and the harness version and git commit."""
    from mlflow.tracking.context.registry import resolve_tags

    v = stagekey.code_version()
    tags = {k: str(val) for k, val in resolve_tags().items()}
    tags[f"{TAG}.version"] = str(v.get("version"))
    if v.get("commit"):
        tags[f"{TAG}.git_commit"] = str(v["commit"])
        tags[f"{TAG}.git_dirty"] = str(bool(v.get("dirty"))).lower()
        tags["mlflow.source.git.commit"] = str(v["commit"])
    return tags


def run_suite(suite: Suite, opts: RunOptions) -> SuiteOutcome:
    """Run every stage of ``suite`` in order; rerunning the same command resumes or reuses stages."""
    quiet_tune_output()
    start = time.time()
    storage = cluster.Storage(opts.workdir)  # a bad workdir URI is one line, before anything starts
    uri = tracking.resolve_tracking_uri(opts.tracking_uri, storage.cache)
    unknown = sorted(set(opts.fresh) - {s.name for s in suite.stages})
    if unknown:
        raise StageInputError(f"--fresh names no stage of suite {suite.name!r}: {', '.join(unknown)}")
    # Ray first: nothing is created in MLflow for a suite that cannot start (no cluster, a refused
    # token, a workdir some node cannot use, GPUs the cluster cannot give)
    init_ray(opts.address)
    on_cluster = bool(opts.address or os.environ.get("RAY_ADDRESS"))
    if not on_cluster:
        try:  # on this machine a trial asking for more CPUs than it has would wait forever
            check_resources(suite, float(ray.cluster_resources().get("CPU", 0.0)))
        except SuiteError as err:
            raise StageInputError(str(err)) from None
    else:
        n_nodes = cluster.check_storage(storage)
        opts.log(f"Ray cluster: {n_nodes} node(s) can read and write the workdir {storage.uri}")
    for st in suite.stages:  # said now, not after the earlier stages ran
        trial_resources(st.resources or suite.resources, st.name, opts.allow_cpu_fallback, lambda m: None)
    client = tracking.init_tracking(uri)
    exp_id = tracking.ensure_experiment(client, suite.name, uri)
    version_tags = _version_tags()
    suite_run_id = tracking.start_run(
        client,
        exp_id,
        f"suite {suite.name}",
        {
            f"{TAG}.kind": "suite",
            f"{TAG}.suite": suite.name,
            f"{TAG}.metric": suite.metric.name,
            f"{TAG}.mode": suite.metric.mode,
            **version_tags,
        },
    )
    orphans = tracking.close_orphan_runs(client, exp_id, keep=suite_run_id)
    if orphans:
        opts.log(
            f"closed {orphans} suite/stage runs left open by an earlier driver that did not exit cleanly"
        )
    opts.log(f"suite {suite.name!r}: {len(suite.stages)} stage(s); MLflow {uri} (experiment {exp_id})")
    ctx = {
        "client": client,
        "experiment_id": exp_id,
        "suite_run_id": suite_run_id,
        "tracking_uri": uri,
        "version_tags": version_tags,
        "storage": storage,
    }
    outcomes: dict[str, StageOutcome] = {}

    def record(outs: list[StageOutcome]) -> None:
        client.set_tag(suite_run_id, f"{TAG}.stage_keys", ",".join(o.key for o in outs))
        client.set_tag(suite_run_id, f"{TAG}.stage_runs", ",".join(o.run_id for o in outs))

    try:
        for stage in suite.stages:
            outcomes[stage.name] = run_stage(suite, stage, dict(outcomes), ctx, opts)
            record(list(outcomes.values()))
    except StageFailed as failed:
        record([*outcomes.values(), failed.outcome])  # the leaderboard shows what ran, errors counted
        failed.outcome.extra["completed_stages"] = dict(outcomes)
        client.set_terminated(suite_run_id, status="FAILED")
        raise
    except BaseException:
        client.set_terminated(suite_run_id, status="KILLED")
        raise
    client.set_terminated(suite_run_id, status="FINISHED")
    return SuiteOutcome(suite.name, suite_run_id, uri, exp_id, outcomes, time.time() - start)
