"""Run a suite: connect Ray, open its MLflow suite run, and run its stages (each through
:func:`harness.engine.stage.run_stage`) as a graph, every stage whose inputs are done at once
(:mod:`harness.engine.graphrun`), or with ``sequential`` one after another; a rerun of the same command reuses
finished stages and resumes interrupted ones."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import ray

from harness import cluster, tracking
from harness.config.graph import StageGraph
from harness.config.suite import Suite, SuiteError, check_resources, check_trial_caps, trial_caps
from harness.engine import stagekey
from harness.engine.context import RunOptions, SuiteContext
from harness.engine.errors import StageFailed, StageInputError, SuiteInterrupted, TrialFailure
from harness.engine.graphrun import cap_pending_trials, run_graph, stage_inputs
from harness.engine.stage import run_stage
from harness.engine.trials import trial_key, trial_resources
from harness.engine.usage import suite_usage
from harness.stages.outputs import TAG, StageOutcome, SuiteOutcome, TrialOutput

__all__ = [
    "RunOptions",
    "StageFailed",
    "StageInputError",
    "StageOutcome",
    "SuiteInterrupted",
    "SuiteOutcome",
    "TrialFailure",
    "TrialOutput",
    "init_ray",
    "run_suite",
    "trial_key",
]


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


def interrupt_on_sigterm() -> None:
    """SIGTERM raises SIGINT from now on (main thread only), replacing any handler ``ray.init`` installed."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def quiet_tune_output() -> None:
    """Our own progress lines replace Tune's tables; results go to JSON/CSV files and MLflow only. After an
    interruption, our one line ("rerun the same command to resume it") replaces Tune's notes: a warning per
    unfinished trial that it has no result.json yet, and its ``Tuner.restore(...)`` hint. Ray's note that token
    authentication is on (every local run) is dropped too."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tune_logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_logger.filters):
        tune_logger.addFilter(_NoRestoreHint())
    # Ray's note that a new local Ray enables token authentication (its default, which the harness keeps) is
    # printed on every run; its warning that authentication is DISABLED is kept
    auth_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _NoTokenNote) for f in auth_logger.filters):
        auth_logger.addFilter(_NoTokenNote())


class _NoRestoreHint(logging.Filter):
    """Drops Tune's "Resume experiment with: Tuner.restore(...)" note (the harness resumes by itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


class _NoTokenNote(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster" note (not the disabled warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


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
    """Run the stages of ``suite`` (as a graph, or in order with ``opts.sequential``); rerunning the same
    command resumes or reuses stages. A stage that fails stops the stages downstream of it; the others
    finish, then the first failure in suite order is raised."""
    quiet_tune_output()
    start = time.time()
    storage = cluster.Storage(opts.workdir)  # a bad workdir URI is one line, before anything starts
    uri = tracking.resolve_tracking_uri(opts.tracking_uri, storage.cache)
    try:  # before Ray or MLflow start (each stage's exact count is checked again when it is planned)
        check_trial_caps(suite, *trial_caps(opts.max_trials, opts.max_suite_trials))
    except SuiteError as err:
        raise StageInputError(str(err)) from None
    unknown = sorted(set(opts.fresh) - {s.name for s in suite.stages})
    if unknown:
        raise StageInputError(f"--fresh names no stage of suite {suite.name!r}: {', '.join(unknown)}")
    graph = StageGraph.of(suite)
    # a stage run again whole gives new outputs: the stages that read them run again too
    fresh = graph.downstream(opts.fresh)
    if fresh != set(opts.fresh):
        also = [n for n in graph.order if n in fresh - set(opts.fresh)]
        opts.log(
            f"--fresh {', '.join(sorted(opts.fresh))}: also reruns the stages downstream: {', '.join(also)}"
        )
    opts = dataclasses.replace(opts, fresh=frozenset(fresh))
    # Ray first: nothing is created in MLflow for a suite that cannot start (no cluster, a refused
    # token, a workdir some node cannot use, GPUs the cluster cannot give)
    init_ray(opts.address)
    if opts.sigterm_as_interrupt:
        interrupt_on_sigterm()
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
        trial_resources(suite.stage_resources(st), st.name, opts.allow_cpu_fallback, lambda m: None)
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
    how = "one after another" if opts.sequential else f"as a graph of {len(graph.waves())} wave(s)"
    opts.log(f"suite {suite.name!r}: {len(suite.stages)} stage(s), {how}; MLflow {uri} (experiment {exp_id})")
    ctx = SuiteContext(client, exp_id, suite_run_id, uri, storage, version_tags)
    outcomes: dict[str, StageOutcome] = {}

    def record(failed: dict[str, StageFailed]) -> None:
        """The suite run's stage keys and runs, in suite order (a failed stage's too: the leaderboard shows
        what ran, errors counted)."""
        outs = [outcomes.get(n) or failed[n].outcome for n in graph.order if n in outcomes or n in failed]
        client.set_tag(suite_run_id, f"{TAG}.stage_keys", ",".join(o.key for o in outs))
        client.set_tag(suite_run_id, f"{TAG}.stage_runs", ",".join(o.run_id for o in outs))

    try:
        if opts.sequential:
            errors = _run_in_order(suite, graph, ctx, opts, outcomes, record)
        else:
            cap_pending_trials(float(ray.cluster_resources().get("CPU", 1.0)))
            errors = run_graph(suite, graph, ctx, opts, outcomes, record)
        if errors:
            raise _first_error(graph, errors, outcomes)
    except StageFailed:
        client.set_terminated(suite_run_id, status="FAILED")
        raise
    except BaseException:
        client.set_terminated(suite_run_id, status="KILLED")
        raise
    usage = suite_usage(suite, outcomes, float(ray.cluster_resources().get("CPU", 1.0)), time.time() - start)
    tracking.log_batch(client, suite_run_id, metrics=tracking.finite_metrics(usage))
    opts.log(
        f"suite {suite.name!r}: {usage['wall_s']:.1f}s, critical path {usage['critical_path_s']:.1f}s, "
        f"CPUs allocated {usage['utilisation']:.0%} of the time"
    )
    client.set_terminated(suite_run_id, status="FINISHED")
    ordered = {n: outcomes[n] for n in graph.order}
    return SuiteOutcome(suite.name, suite_run_id, uri, exp_id, ordered, time.time() - start)


def _run_in_order(
    suite: Suite,
    graph: StageGraph,
    ctx: SuiteContext,
    opts: RunOptions,
    outcomes: dict[str, StageOutcome],
    record: Callable[[dict[str, StageFailed]], None],
) -> dict[str, BaseException]:
    """``--sequential``: the stages one after another in suite order, in this (the main) thread; the first
    that fails stops the suite (returned as ``{stage: error}``)."""
    for stage in suite.stages:
        try:
            outcomes[stage.name] = run_stage(
                suite, stage, stage_inputs(graph, stage.name, outcomes), ctx, opts
            )
        except StageFailed as failed:
            record({stage.name: failed})
            return {stage.name: failed}
        record({})
    return {}


def _first_error(
    graph: StageGraph, errors: dict[str, BaseException], outcomes: dict[str, StageOutcome]
) -> BaseException:
    """The error to raise for a suite whose stages ``errors`` did not finish: the first in suite order. A
    :class:`StageFailed` carries what finished (``completed_stages``, suite order), the stages that did not
    start because of the failures (``not_started``), the other failed stages (``other_failures``) and the
    messages of stages that could not be planned (``input_errors``)."""
    names = [n for n in graph.order if n in errors]
    first = errors[names[0]]
    if isinstance(first, StageFailed):
        extra = first.outcome.extra
        extra["completed_stages"] = {n: outcomes[n] for n in graph.order if n in outcomes}
        extra["not_started"] = [n for n in graph.order if n not in outcomes and n not in errors]
        extra["other_failures"] = [errors[n] for n in names[1:] if isinstance(errors[n], StageFailed)]
        extra["input_errors"] = [str(errors[n]) for n in names[1:] if not isinstance(errors[n], StageFailed)]
    return first
