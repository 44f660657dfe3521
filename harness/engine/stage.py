"""One stage as one Ray Tune experiment, in four steps: plan its trials, reuse a finished run, run (or
resume) the trials, collect the outcome. :func:`run_stage` chains them."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from harness import cluster, tracking
from harness.config.suite import Suite, trial_caps
from harness.engine import fairshare, stagekey, trust
from harness.engine.context import RunOptions, SuiteContext
from harness.engine.early_stopping import budget_metrics, early_stopping_config
from harness.engine.errors import StageFailed, StageInputError, SuiteInterrupted, TrialFailure
from harness.engine.progress import ClientProgress, Progress
from harness.engine.search import tune_search
from harness.engine.trials import (
    TRIALS_FILE,
    TrialLabel,
    TrialParams,
    TrialTags,
    trial_dirname,
    trial_key,
    trial_resources,
)
from harness.jsonio import flatten_params
from harness.registry import STAGES
from harness.stages.base import StageKind
from harness.stages.outputs import TAG, ResultKey, StageOutcome, TrialOutput, stopped_early


@dataclass
class StagePlan:
    """A stage's planned trials and its content-addressed key (resolved trials, files, inputs, code)."""

    stage: Any
    kind: StageKind[Any, Any]
    trials: list[Any]
    key: str
    #: where the stage's artifacts are downloaded and its stage-level files written
    art_cache: Path


@dataclass
class Experiment:
    """The Tune experiment of a stage: its place in the workdir, its stage run, and what is left to run."""

    name: str
    #: the experiment's path parts in the workdir storage
    parts: tuple[str, ...]
    stage_run_id: str
    #: an interrupted stage run of the same key being continued
    resumed: bool
    #: Tune's saved state is verified and is restored (else a new experiment runs ``trials``)
    restore: bool
    trials: list[Any] = field(default_factory=list)
    #: the stage run carries the digest of an earlier fit's state (dropped when this fit starts)
    stale_digest: bool = False


def plan_stage(
    suite: Suite,
    stage: Any,
    inputs: dict[str, StageOutcome],
    ctx: SuiteContext,
    max_trials: int | None = None,
) -> StagePlan:
    """The kind's trials for ``stage`` and the stage key; an input problem, or more trials than
    ``max_trials`` (default :data:`~harness.config.suite.MAX_STAGE_TRIALS`), is one :class:`StageInputError`."""
    kind = STAGES.get(stage.kind)
    try:
        trials = kind.plan(suite, stage, inputs)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise StageInputError(f"stage {stage.name!r} cannot start: {err}") from None
    if not trials:
        raise StageInputError(f"stage {stage.name!r} has no trials to run (check its inputs)")
    cap = trial_caps(max_trials)[0]
    if len(trials) > cap:
        raise StageInputError(
            f"stage {stage.name!r} plans {len(trials):,} trials, over the cap of {cap:,} per stage; shrink "
            "its grid, seeds or inputs, or pass --max-trials to allow it"
        )
    key = stagekey.stage_key(stage, {k: v.key for k, v in inputs.items()}, trials)
    art_cache = ctx.storage.cache / "artifacts" / suite.name / f"{stage.name}-{key}"
    return StagePlan(stage, kind, trials, key, art_cache)


def reuse_stage(plan: StagePlan, ctx: SuiteContext, opts: RunOptions) -> StageOutcome | None:
    """The outcome of a completed run of the same stage key (finalized again, not re-logged), or None."""
    stage = plan.stage
    if stage.name in opts.fresh:
        return None
    done = tracking.completed_stage_run(ctx.client, ctx.experiment_id, plan.key)
    if done is None:
        return None
    trials = stage_outputs(ctx.client, ctx.experiment_id, done.info.run_id, plan.art_cache)
    opts.log(f"[{stage.name}] reusing finished stage (run {done.info.run_id}, {len(trials)} trials)")
    outcome = StageOutcome(stage.name, stage.kind, plan.key, done.info.run_id, True, trials)
    finalize_stage(plan, outcome, ctx, fresh=False, opts=opts)
    return outcome


def open_experiment(suite: Suite, plan: StagePlan, ctx: SuiteContext, opts: RunOptions) -> Experiment:
    """The stage run (new, or an interrupted one continued) and the trials still to run: Tune's own list when
    its verified state is restored, else those MLflow has no finished record of."""
    stage, key, client, storage = plan.stage, plan.key, ctx.client, ctx.storage
    name = f"{stage.name}-{key}"
    parts = ("tune", suite.name, name)
    # files the trials read travel as storage URIs when the workdir is one (never driver-local paths)
    trials = cluster.stage_inputs(plan.trials, storage)
    if stage.name in opts.fresh:
        n = forget_stage(client, ctx.experiment_id, key, storage, parts)
        opts.log(f"[{stage.name}] --fresh: discarded {n} earlier runs and the Tune state of this stage")
    prev = tracking.find_runs(
        client, [ctx.experiment_id], f"tags.`{TAG}.stage_key` = '{key}' and tags.`{TAG}.kind` = 'stage'"
    )
    if prev:  # a stage run with this key that did not complete is an interrupted one: continue it
        stage_run_id = prev[0].info.run_id
        client.update_run(stage_run_id, status="RUNNING")
        stale = tracking.close_stale_trial_runs(client, ctx.experiment_id, key)
        opts.log(f"[{stage.name}] resuming an interrupted stage ({stale} unfinished trial runs closed)")
    else:
        stage_run_id = tracking.start_run(
            client,
            ctx.experiment_id,
            stage.name,
            {
                f"{TAG}.kind": "stage",
                f"{TAG}.suite": suite.name,
                f"{TAG}.stage": stage.name,
                f"{TAG}.stage_kind": stage.kind,
                f"{TAG}.stage_key": key,
            },
            ctx.suite_run_id,
        )
        tracking.log_batch(client, stage_run_id, params=flatten_params(stage.model_dump(mode="json")))
    digest = prev[0].data.tags.get(f"{TAG}.tune_state_digest") if prev else None
    restore = _verified_state(plan, storage, parts, digest, opts)
    if restore:
        # the experiment's own trial list (written when it was created; covered by the digest)
        keys = json.loads(storage.read_text(*parts, TRIALS_FILE))
        by_key = {trial_key(key, t): t for t in trials}
        trials = [by_key[k] for k in keys]
    else:
        finished = tracking.finished_trial_keys(client, ctx.experiment_id, key)
        left = [t for t in trials if trial_key(key, t) not in finished]
        if finished:
            opts.log(f"[{stage.name}] {len(trials) - len(left)} trials already recorded as finished")
        trials = left
        storage.write_text(json.dumps([trial_key(key, t) for t in trials]), *parts, TRIALS_FILE)
    return Experiment(name, parts, stage_run_id, bool(prev), restore, trials, stale_digest=bool(digest))


def _verified_state(
    plan: StagePlan, storage: cluster.Storage, parts: tuple[str, ...], digest: str | None, opts: RunOptions
) -> bool:
    """Whether Tune state of this experiment exists and matches the digest this harness recorded; state
    without a digest (a driver killed before it could record one) is moved aside, never unpickled."""
    if not tune.Tuner.can_restore(storage.url(*parts)):
        return False
    if trust.is_signed(digest) and storage.exists(*parts, TRIALS_FILE):
        with storage.local_view(*parts) as local:
            # refuse to unpickle state this user's harness did not write and sign
            stagekey.verify_tree(local, str(digest))
        return True
    aside = (*parts[:-1], f"{parts[-1]}.unverified-{int(time.time())}")
    storage.move(parts, aside)
    why = "is not signed (an older harness wrote it)" if digest else "has no digest (its driver was killed)"
    opts.log(f"[{plan.stage.name}] the Tune state {why}, so it is not read; moved to {storage.url(*aside)}")
    return False


#: Tune's trainable registry is one dict per process, flushed to Ray without a lock
_REGISTRY_LOCK = threading.Lock()


def register_trainable(name: str, trainable: Any) -> str:
    """Register ``trainable`` with Tune under ``name`` (one registration at a time) and return the name, which
    the Tuner is given instead of the trainable. Left to Tune, every stage's trainable would be registered as
    ``run_trial`` from inside ``fit``: stages running at once would overwrite each other's (and its resources)
    and race on the registry's dict. The name is the stage's own and stable, as a restored experiment needs."""
    with _REGISTRY_LOCK:
        tune.register_trainable(name, trainable)
    return name


def run_trials(
    suite: Suite, plan: StagePlan, exp: Experiment, ctx: SuiteContext, opts: RunOptions
) -> tuple[list[Any], int]:
    """Fit (or restore and finish) the stage's Tune experiment; Tune's results and how many trials ran."""
    from harness.engine.trainable import run_trial

    stage, kind, storage = plan.stage, plan.kind, ctx.storage
    exp_path = storage.url(*exp.parts)
    res = suite.stage_resources(stage)
    trainable = register_trainable(
        f"sl2o_{suite.name}_{stage.name}_{plan.key}",
        tune.with_resources(run_trial, trial_resources(res, stage.name, opts.allow_cpu_fallback, opts.log)),
    )
    n_trials = len(exp.trials)
    param_space: dict[str, Any] = {"kind": kind.name, "trial": tune.grid_search(exp.trials)}
    early = early_stopping_config(kind, stage, param_space)
    # a kind that searches (meta_tune with search: tune) gets its trials from a search algorithm instead
    search = tune_search(kind, stage, exp.trials)
    if search is not None:
        if kind.interim_metric:  # its trials report interim values: each report carries the searcher's metric
            search.param_space["search_metric"] = [
                search.tune_config["search_alg"].metric,
                kind.interim_metric,
            ]
        if early:  # ASHA on a search
            search.param_space["early_stopping"] = param_space["early_stopping"]
            search.tune_config.update(early)
        param_space, n_trials = search.param_space, search.num_samples
    progress: Progress | None = None
    if exp.restore:
        opts.log(f"[{stage.name}] restoring Tune experiment {exp_path}")
        # the trial models are object references to Tune: its saved state keeps placeholders for them,
        # so the same param space is handed back (Tune requires its structure to be unchanged)
        tuner = tune.Tuner.restore(
            exp_path, trainable, resume_unfinished=True, resume_errored=True, param_space=param_space
        )
        gate = fairshare.restored_gate(tuner)
    else:
        tracker = tracking.TrialTracker(
            ctx.tracking_uri,
            ctx.experiment_id,
            exp.stage_run_id,
            {
                **ctx.version_tags,
                f"{TAG}.suite": suite.name,
                f"{TAG}.stage": stage.name,
                f"{TAG}.stage_kind": stage.kind,
                f"{TAG}.stage_key": plan.key,
            },
            TrialTags(kind, plan.key),
            TrialParams(kind),
        )
        max_failures = stage.max_failures if stage.max_failures is not None else suite.max_failures
        # trials an interrupted run finished (MLflow has their records) count as done: the lines count on
        already = 0 if search is not None else len(plan.trials) - len(exp.trials)
        if cluster.client_mode():  # Ray Client: Tune runs fit (and its callbacks) on the head node
            progress = ClientProgress(
                stage.name,
                n_trials + already,
                opts.log,
                TrialLabel(kind),
                already=already,
                sink=cluster.ClientLog(),
            )
        else:
            progress = Progress(
                stage.name, n_trials + already, opts.log, TrialLabel(kind), live=opts.live, already=already
            )
        # the trial source behind a gate: a graph shares the cluster's CPUs between its stages by moving it
        # (harness.engine.fairshare); it also holds the stage's own max_concurrent
        tune_cfg = dict(search.tune_config) if search is not None else dict(early)
        gate = fairshare.gate_for(tune_cfg.pop("search_alg", None), stage.max_concurrent)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                reuse_actors=True, trial_dirname_creator=trial_dirname, search_alg=gate, **tune_cfg
            ),
            run_config=tune.RunConfig(
                name=exp.name,
                storage_path=str(storage.url("tune", suite.name)),
                failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                callbacks=[
                    JsonLoggerCallback(),
                    CSVLoggerCallback(),
                    tracker,
                    progress,
                    fairshare.TrialCounter(stage.name),
                ],
                verbose=0,
            ),
        )
    opts.log(f"[{stage.name}] {n_trials} trials ({stage.kind}); Tune state in {exp_path}")
    if not n_trials:
        return [], 0
    if exp.stale_digest:
        # Tune rewrites its state while it runs: a digest from an earlier fit no longer describes it, and
        # a driver killed during this fit must leave state that counts as unverified (set aside, not read)
        ctx.client.delete_tag(exp.stage_run_id, f"{TAG}.tune_state_digest")
    # Ray Client mode runs Tune's loops on the head node, out of this driver's share: they take what Ray gives
    share = None if cluster.client_mode() else fairshare.active()
    if share is not None:
        share.join(
            stage.name, gate, cpus_per_trial=res.cpus_per_trial, trials=n_trials, cap=stage.max_concurrent
        )
    try:
        if isinstance(progress, ClientProgress):
            grid = cluster.fit_streaming(tuner.fit, progress.sink, opts.log)
            progress.sink.shutdown()
        else:
            grid = tuner.fit()
    finally:
        if share is not None:
            share.leave(stage.name)
        if progress is not None:
            progress.stop()
    with storage.local_view(*exp.parts) as local:
        ctx.client.set_tag(exp.stage_run_id, f"{TAG}.tune_state_digest", stagekey.sign_tree(local))
    return [grid[i] for i in range(len(grid))], n_trials


def collect_stage(
    plan: StagePlan,
    exp: Experiment,
    results: list[Any],
    n_trials: int,
    ctx: SuiteContext,
    opts: RunOptions,
    seconds: float,
) -> StageOutcome:
    """The stage's outcome from Tune's results and MLflow's records: interrupted, failed, or finalized and
    marked complete (only then is it reused by a rerun)."""
    stage, client, run_id = plan.stage, ctx.client, exp.stage_run_id
    errors = sum(1 for r in results if r.error is not None)
    # a trial is done when its last report is the trainable's final one (Tune may call a trial stopped
    # by Ctrl-C "terminated"); anything less means the stage was interrupted
    finished = sum(1 for r in results if r.error is None and (r.metrics or {}).get(ResultKey.FINAL))
    # a trial early stopping ended is done too (Tune marked its last result done; it has no final report)
    stopped = sum(1 for r in results if r.error is None and stopped_early(r.metrics or {}))
    if finished + stopped + errors < n_trials:
        # Tune returns normally after SIGINT; the stage is unfinished and must not be marked complete
        client.set_terminated(run_id, status="KILLED")
        raise SuiteInterrupted(
            f"stage {stage.name!r} was interrupted after {finished}/{n_trials} trials; "
            "rerun the same command to resume it"
        )
    trials = stage_outputs(client, ctx.experiment_id, run_id, plan.art_cache)
    outcome = StageOutcome(stage.name, stage.kind, plan.key, run_id, False, trials, errors, seconds)
    if errors:
        label = TrialLabel(plan.kind)
        failures = [
            TrialFailure(label(r.config or {}), _last_line(r.error), f"{r.path}/error.txt")
            for r in results
            if r.error is not None
        ]
        client.set_tag(run_id, f"{TAG}.errors", str(errors))
        client.set_terminated(run_id, status="FAILED")
        opts.log(f"[{stage.name}] {errors} of {n_trials} trials errored; the stage is not finished")
        raise StageFailed(outcome, failures)
    finalize_stage(plan, outcome, ctx, fresh=True, opts=opts)
    if plan.kind.early_stopping(stage) is not None:
        keys = [trial_key(plan.key, t) for t in plan.trials]
        budget = budget_metrics(plan.kind, plan.trials, keys, trials)
        tracking.log_batch(client, run_id, metrics=tracking.finite_metrics(budget))
        opts.log(
            f"[{stage.name}] early stopping: {budget['early_stopped']:.0f} trials stopped, "
            f"{budget['budget_saved_fraction']:.0%} of the grid's training steps saved"
        )
    client.set_tag(run_id, f"{TAG}.complete", "true")
    client.set_tag(run_id, f"{TAG}.errors", str(errors))
    client.set_terminated(run_id, status="FINISHED")
    opts.log(f"[{stage.name}] finished: {len(trials)} trials ok, {errors} errored, {seconds:.1f}s")
    return outcome


def run_stage(
    suite: Suite, stage: Any, inputs: dict[str, StageOutcome], ctx: SuiteContext, opts: RunOptions
) -> StageOutcome:
    """Run (or reuse, or resume) one stage as a Ray Tune experiment; one driver at a time per stage key."""
    plan = plan_stage(suite, stage, inputs, ctx, opts.max_trials)
    with stage_lock(
        ctx.storage.cache / "locks" / f"{suite.name}-{stage.name}-{plan.key}.lock", stage.name, opts
    ):
        reused = reuse_stage(plan, ctx, opts)
        if reused is not None:
            return reused
        start = time.time()
        exp = open_experiment(suite, plan, ctx, opts)
        results, n_trials = run_trials(suite, plan, exp, ctx, opts)
        return collect_stage(plan, exp, results, n_trials, ctx, opts, time.time() - start)


@contextlib.contextmanager
def stage_lock(path: Path, stage: str, opts: RunOptions) -> Iterator[None]:
    """An exclusive lock on one stage key for the ``with`` block: a second ``sl2o run`` of the same stage on
    this machine waits for the first (then reuses its result) instead of training every trial again. The
    lock is the driver's (``storage.cache``): drivers on other machines sharing a URI workdir are not seen."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            opts.log(f"[{stage}] another sl2o run ({holder}) is running this stage; waiting for it to end")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stage_outputs(client: Any, experiment_id: str, stage_run_id: str, dest: Path) -> list[TrialOutput]:
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


def finalize_stage(
    plan: StagePlan, outcome: StageOutcome, ctx: SuiteContext, fresh: bool, opts: RunOptions
) -> None:
    """The kind's stage-level step after its trials (e.g. merging a distill stage's fronts); a fresh run
    logs the files it wrote and its metrics to the stage run."""
    outdir = plan.art_cache / "stage"
    outdir.mkdir(parents=True, exist_ok=True)
    plan.kind.finalize(plan.stage, outcome, outdir, opts.log)
    if fresh and any(outdir.iterdir()):
        ctx.client.log_artifacts(outcome.run_id, str(outdir))
    if fresh and outcome.extra.get("metrics"):  # e.g. a searched meta_tune stage's selection
        tracking.log_batch(
            ctx.client, outcome.run_id, metrics=tracking.finite_metrics(outcome.extra["metrics"])
        )


def forget_stage(client: Any, exp_id: str, key: str, storage: cluster.Storage, parts: tuple[str, ...]) -> int:
    """``--fresh``: delete the MLflow runs (stage and trials) and the Tune state of a stage key."""
    runs = tracking.find_runs(client, [exp_id], f"tags.`{TAG}.stage_key` = '{key}'")
    for r in runs:
        client.delete_run(r.info.run_id)
    storage.rmtree(*parts)
    return len(runs)


def _last_line(err: BaseException | None) -> str:
    """The last non-empty line of an error's text (Ray wraps the trial's own exception in a long one)."""
    lines = [line.strip() for line in str(err or "unknown error").splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:300]
