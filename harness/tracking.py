"""MLflow glue: tracking URIs, suite/stage parent runs, per-trial child runs, leaderboard queries.

Trials never talk to MLflow themselves: they report metrics (and, in batches, their loss curves) to
Ray Tune, and ``TrialTracker`` -- a Tune callback in the driver -- writes one child run per trial.
That keeps a single writer on the SQLite store and works unchanged against an ``mlflow server``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from harness.specs import horizon_label, task_label
from harness.stages.outputs import ARTIFACTS_DIR, DATASET_FILE, TAG, ResultKey

DEFAULT_DB = "mlflow.db"


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<absolute path>/mlflow.db`` (MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{(Path(workdir).resolve() / DEFAULT_DB)}"


def resolve_tracking_uri(uri: str | None, workdir: str | Path = ".") -> str:
    """The URI to use: explicit > ``MLFLOW_TRACKING_URI`` > the default SQLite file.

    A relative ``sqlite:///`` path is made absolute so Ray workers in other directories agree.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = f"sqlite:///{Path(rel).resolve()}"
    elif "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is not a URI; use sqlite:///<path>/mlflow.db or http://host:5000 "
            "(MLflow 3 no longer supports a plain directory store)"
        )
    return uri


def init_tracking(uri: str) -> MlflowClient:
    """Point MLflow at ``uri`` and create the SQLite DB now, in the driver, before trials start."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # every call goes through an MlflowClient bound to ``uri``; mlflow.set_tracking_uri is not used because
    # it exports MLFLOW_TRACKING_URI, which would then override the next command's own choice in-process
    if not uri.startswith("sqlite:///"):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        return client
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    # creating and migrating a new store is serialized: two suites started at once on a fresh store
    # would otherwise race in MLflow's schema migration ("duplicate column name")
    with _file_lock(db.with_name(db.name + ".lock")):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # runs the schema migrations once, here
    return client


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the ``with`` block."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a SQLite DB (``<dir>/mlartifacts``); servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (tagged as ours) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root_for(uri)
    try:
        return client.create_experiment(
            name, artifact_location=f"{root}/{name}" if root else None, tags={f"{TAG}.suite": name}
        )
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another driver created it just now
        if exp is None:
            raise
        return exp.experiment_id


def start_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a run (nested under ``parent_run_id`` when given) and return its id."""
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return run.info.run_id


def finite_metrics(metrics: dict[str, Any]) -> list[Metric]:
    """Numeric, finite values as MLflow metrics (inf/NaN are kept out; ``diverged`` says why)."""
    now = int(time.time() * 1000)
    out = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out.append(Metric(k, float(v), now, 0))
    return out


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """One ``log_batch`` call, split to MLflow's 1000-metric / 100-param limits."""
    metrics = list(metrics)
    plist = [Param(k, v[:6000]) for k, v in (params or {}).items()]
    tlist = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metrics), 1), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000], params=plist[:100], tags=tlist)
        plist, tlist = plist[100:], []
    while plist:
        client.log_batch(run_id, params=plist[:100])
        plist = plist[100:]


def find_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """All runs matching ``filter_string`` (paged)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def our_experiments(client: MlflowClient, suite: str | None = None) -> list[Any]:
    """Experiments created by this harness (optionally only suite ``suite``)."""
    exps = client.search_experiments(filter_string=f"tags.`{TAG}.suite` != ''")
    exps = [e for e in exps if e.tags.get(f"{TAG}.suite")]
    if suite is not None:
        exps = [e for e in exps if e.name == suite]
    return exps


def latest_suite_run(client: MlflowClient, experiment_id: str) -> Any | None:
    """The most recent suite parent run of an experiment."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{TAG}.kind` = 'suite'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def completed_stage_run(client: MlflowClient, experiment_id: str, stage_key: str) -> Any | None:
    """A finished stage run with this key (its outputs can be reused), else None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'stage' "
        f"and tags.`{TAG}.complete` = 'true'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def close_orphan_runs(client: MlflowClient, experiment_id: str, keep: str | None = None) -> int:
    """Close suite and stage runs an earlier driver left RUNNING (it was killed); returns how many.

    Their trials are resumed by the stage that reruns; this only ends the stale bookkeeping runs.
    """
    stale = [
        r
        for kind in ("suite", "stage")
        for r in find_runs(
            client, [experiment_id], f"tags.`{TAG}.kind` = '{kind}' and attributes.status = 'RUNNING'"
        )
    ]
    n = 0
    for r in stale:
        if r.info.run_id != keep:
            client.set_terminated(r.info.run_id, status="KILLED")
            n += 1
    return n


def close_stale_trial_runs(client: MlflowClient, experiment_id: str, stage_key: str) -> int:
    """Mark trial runs left RUNNING by an interrupted driver as KILLED; returns how many."""
    stale = find_runs(
        client,
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'trial' "
        "and attributes.status = 'RUNNING'",
    )
    for r in stale:
        client.set_terminated(r.info.run_id, status="KILLED")
    return len(stale)


# ---------------------------------------------------------------------------------------------
# dataset inputs: the SR dataset a collect trial writes ("collected") and a distill trial fits ("training")
# ---------------------------------------------------------------------------------------------
def _npy_shape(zf: zipfile.ZipFile, member: str) -> tuple[int, ...]:
    """The shape of an ``.npy`` member of an ``.npz``, from its header alone (nothing else is read)."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        return tuple(read(fh)[0])


def sr_dataset_input(path: str | Path, context: str, source_uri: str | None = None) -> DatasetInput:
    """The MLflow dataset input (``log_inputs``) of an SR dataset file, read without loading its arrays.

    Name: its source's label; digest: the SHA-256 of the file (so the collect run that wrote it and every
    distill run that read a copy share one MLflow dataset); source: ``source_uri`` (default the file);
    schema: its input columns and the target (``update``); profile: ``n_train``, ``n_val``, ``n_inputs``
    from the arrays' ``.npy`` headers; the input tag ``mlflow.data.context`` is ``context``.
    """
    from mlflow.types import ColSpec, DataType, Schema

    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    with np.load(path, allow_pickle=False) as npz:
        names = [str(n) for n in np.atleast_1d(npz["names"]).tolist()]
        meta = json.loads(str(npz["metadata"]))
    with zipfile.ZipFile(path) as zf:
        train, val = _npy_shape(zf, "X_train.npy"), _npy_shape(zf, "X_val.npy")
    src = (meta.get("source") or {}) if isinstance(meta, dict) else {}
    uri = source_uri or Path(path).resolve().as_uri()
    scheme = uri.split(":", 1)[0] if ":" in uri else "local"
    schema = Schema([ColSpec(DataType.double, n) for n in [*names, "update"]])
    profile = {"n_train": train[0], "n_val": val[0], "n_inputs": train[1] if len(train) > 1 else 0}
    dataset = Dataset(
        name=str(src.get("label") or src.get("rule") or Path(path).stem),
        digest=sha.hexdigest()[:16],
        source_type="local" if scheme == "file" else scheme,
        source=json.dumps({"uri": uri}),
        schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def _trial_field(config: Mapping[str, Any], name: str) -> Any:
    """Field ``name`` of the trial model in a Tune config (``config["trial"]``, a model or its dict)."""
    trial = config.get("trial")
    return trial.get(name) if isinstance(trial, Mapping) else getattr(trial, name, None)


# ---------------------------------------------------------------------------------------------
# the Tune callback that writes trial runs
# ---------------------------------------------------------------------------------------------
def _tune_callback_base() -> type:
    from ray.tune import Callback

    return Callback


class TrialTracker(_tune_callback_base()):  # type: ignore[misc]
    """Ray Tune callback: one MLflow child run per trial under the stage run, exactly once.

    A trial is identified by its ``sl2o.trial_key`` tag (the stage key and the trial's resolved config),
    not by Tune's trial id, so whatever killed the driver before, the rerun leaves one record per trial:
    a trial whose key already has a FINISHED run is not recorded again (Tune may rerun a trial its saved
    state had not yet marked done); an unfinished run of the same key (a killed or errored attempt) is
    deleted and replaced by the new attempt's run, so a retried curve replaces the old one instead of
    being appended to it. The same happens when Tune retries a trial within one run.

    Results carry the keys of :class:`harness.stages.outputs.ResultKey`: ``curve_steps``/``curve_<name>``
    lists (logged as metric histories in one batch), and on the last one ``final: True`` with the final
    metrics, ``status`` and ``info`` (logged as tags); the final checkpoint's ``artifacts/`` folder is
    logged as the run's artifacts when the trial ends. An SR dataset among them (a collect trial's) is
    logged as a dataset input of the run (context ``collected``), and a trial whose model names a
    ``dataset`` file (a distill trial) logs that file as its ``training`` input (:func:`sr_dataset_input`).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        base_tags: dict[str, str],
        trial_tags: Callable[[dict[str, Any]], dict[str, str]],
        trial_params: Callable[[dict[str, Any]], dict[str, str]],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.base_tags = base_tags
        self.trial_tags = trial_tags
        self.trial_params = trial_params
        self._runs: dict[str, str | None] = {}
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        state = dict(self.__dict__)
        state["_client"] = None
        state["_runs"] = {}
        return state

    def _run_for(self, trial: Any) -> str | None:
        """The run recording ``trial``; None when an earlier attempt already recorded it (finished)."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        tags = dict(self.base_tags)
        tags.update(self.trial_tags(trial.config))
        key = tags[f"{TAG}.trial_key"]
        earlier = find_runs(
            self.client,
            [self.experiment_id],
            f"tags.`{TAG}.trial_key` = '{key}' and tags.`{TAG}.kind` = 'trial'",
        )
        if any(r.info.status == "FINISHED" for r in earlier):
            self._runs[trial.trial_id] = None  # recorded once already: ignore this attempt
            return None
        for r in earlier:  # unfinished attempts: replaced by this one
            self.client.delete_run(r.info.run_id)
        tags[f"{TAG}.kind"] = "trial"
        tags[f"{TAG}.trial_id"] = trial.trial_id
        tags[f"{TAG}.status"] = "running"
        name = tags.get(f"{TAG}.stage", "trial") + " " + (tags.get(f"{TAG}.label") or str(trial))
        rid = start_run(self.client, self.experiment_id, name, tags, self.parent_run_id)
        log_batch(self.client, rid, params=self.trial_params(trial.config))
        self._runs[trial.trial_id] = rid
        dataset = _trial_field(trial.config, "dataset")
        if isinstance(dataset, str) and dataset.endswith(".npz"):
            self._log_dataset(rid, dataset, "training")
        return rid

    def _log_dataset(self, rid: str, path: str, context: str, source_uri: str | None = None) -> None:
        """Log the SR dataset ``path`` as an input of run ``rid``; one that cannot be read is left out."""
        try:
            self.client.log_inputs(rid, datasets=[sr_dataset_input(path, context, source_uri)])
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            zipfile.BadZipFile,
            MlflowException,
        ):
            pass

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune retries a failed trial: its new attempt gets a new run, the failed one is removed."""
        rid = self._runs.get(trial.trial_id)
        if rid is not None:
            self.client.delete_run(rid)
        self._runs.pop(trial.trial_id, None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rid = self._run_for(trial)
        if rid is None:
            return
        metrics: list[Metric] = []
        steps = result.get(ResultKey.CURVE_STEPS)
        now = int(time.time() * 1000)
        if steps:
            for key, values in result.items():
                if (
                    key.startswith(ResultKey.CURVE_PREFIX)
                    and key != ResultKey.CURVE_STEPS
                    and isinstance(values, list)
                ):
                    name = key[len(ResultKey.CURVE_PREFIX) :]
                    metrics.extend(
                        Metric(name, float(v), now, int(s))
                        for s, v in zip(steps, values, strict=False)
                        if isinstance(v, int | float) and math.isfinite(float(v))
                    )
        tags = {}
        if result.get(ResultKey.FINAL):
            keep = {k: v for k, v in result.items() if k in result.get(ResultKey.FINAL_KEYS, ())}
            metrics.extend(finite_metrics(keep))
            tags[f"{TAG}.status"] = str(result.get(ResultKey.STATUS, "ok"))
            for k, v in (result.get(ResultKey.INFO) or {}).items():
                tags[f"{TAG}.{k}"] = str(v)[:5000]
        if metrics or tags:
            log_batch(self.client, rid, metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self._run_for(trial)
        if rid is None:
            return
        ckpt = trial.checkpoint
        if ckpt is not None and ckpt.path and os.path.isdir(ckpt.path):
            art = os.path.join(ckpt.path, ARTIFACTS_DIR)
            if os.path.isdir(art):
                self.client.log_artifacts(rid, art)
                if os.path.isfile(os.path.join(art, DATASET_FILE)):
                    root = self.client.get_run(rid).info.artifact_uri
                    uri = f"{root.rstrip('/')}/{DATASET_FILE}" if root else None
                    self._log_dataset(rid, os.path.join(art, DATASET_FILE), "collected", uri)
        self.client.set_terminated(rid, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self._run_for(trial)
        if rid is None:
            return
        err = ""
        if trial.error_file and os.path.exists(trial.error_file):
            err = Path(trial.error_file).read_text()[-4000:]
        log_batch(self.client, rid, tags={f"{TAG}.status": "error", f"{TAG}.error": err or "unknown error"})
        self.client.set_terminated(rid, status="FAILED")


# ---------------------------------------------------------------------------------------------
# leaderboard queries
# ---------------------------------------------------------------------------------------------
def _one_per_trial(runs: list[Any]) -> tuple[list[Any], int]:
    """One run per trial identity (``sl2o.trial_key``, else stage key + config): a finished run before a
    failed one, then the latest. Stores written before trial keys existed may hold doubles."""
    best: dict[str, Any] = {}
    duplicates = 0
    for r in runs:
        t = r.data.tags
        ident = (
            t.get(f"{TAG}.trial_key")
            or f"{t.get(f'{TAG}.stage_key')}:{t.get(f'{TAG}.config', r.info.run_id)}"
        )
        rank = (r.info.status == "FINISHED", r.info.end_time or 0)
        if ident in best:
            duplicates += 1
            other = best[ident]
            if rank <= (other.info.status == "FINISHED", other.info.end_time or 0):
                continue
        best[ident] = r
    return list(best.values()), duplicates


def trial_horizon(tags: dict[str, str]) -> str:
    """An evaluate trial's horizon label (``300 steps``; empty for the optimizee's default budget): its
    ``sl2o.horizon`` tag, else read from its ``sl2o.config`` (runs recorded before the tag existed)."""
    if f"{TAG}.horizon" in tags:
        return tags[f"{TAG}.horizon"]
    try:
        optimizee = json.loads(tags.get(f"{TAG}.config") or "{}").get("optimizee") or {}
        return horizon_label(optimizee.get("steps"), optimizee.get("epochs"))
    except (ValueError, TypeError, AttributeError):
        return ""


def leaderboard_records(
    client: MlflowClient,
    suite: str | None = None,
    optimizee: str | None = None,
    stats: dict[str, int] | None = None,
    curves: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate-trial runs (finished, and errored with ``status: error``) of each suite's latest run, one
    per trial, as flat records for ``report``; ``stats["duplicates"]`` counts the doubles left out. With
    ``curves``, each record also holds its ``train_loss`` curve as ``[(step, value), ...]``. Each record's
    ``horizon`` is its :func:`trial_horizon`; ``optimizee`` filters by the optimizee's label or its task
    label (``mlp · 300 steps``), or a prefix of either.

    Only the stage keys of the most recent suite run count, so an edited and rerun suite does not
    mix old and new results.
    """
    duplicates = 0
    records: list[dict[str, Any]] = []
    for exp in our_experiments(client, suite):
        latest = latest_suite_run(client, exp.experiment_id)
        if latest is None:
            continue
        keys = [k for k in latest.data.tags.get(f"{TAG}.stage_keys", "").split(",") if k]
        metric = latest.data.tags.get(f"{TAG}.metric", "final_train_loss")
        mode = latest.data.tags.get(f"{TAG}.mode", "min")
        for key in keys:
            runs = find_runs(
                client,
                [exp.experiment_id],
                f"tags.`{TAG}.stage_key` = '{key}' and tags.`{TAG}.kind` = 'trial' "
                f"and tags.`{TAG}.stage_kind` = 'evaluate'",
            )
            runs = [r for r in runs if r.info.status in ("FINISHED", "FAILED")]
            unique, doubles = _one_per_trial(runs)
            duplicates += doubles
            for r in unique:
                t = r.data.tags
                horizon = trial_horizon(t)
                task = task_label(t.get(f"{TAG}.optimizee", ""), horizon)
                if optimizee is not None and not (
                    t.get(f"{TAG}.optimizee", "").startswith(optimizee) or task.startswith(optimizee)
                ):
                    continue
                records.append(
                    {
                        "suite": exp.name,
                        "stage": t.get(f"{TAG}.stage"),
                        "optimizee": t.get(f"{TAG}.optimizee"),
                        "horizon": horizon,
                        "optimizer": t.get(f"{TAG}.optimizer"),
                        "family": t.get(f"{TAG}.optimizer_family"),
                        "seed": t.get(f"{TAG}.seed"),
                        "status": "error" if r.info.status == "FAILED" else t.get(f"{TAG}.status", "ok"),
                        "trial_key": t.get(f"{TAG}.trial_key")
                        or f"{key}:{t.get(f'{TAG}.config', r.info.run_id)}",
                        "metric": metric,
                        "mode": mode,
                        "metrics": dict(r.data.metrics),
                        "run_id": r.info.run_id,
                    }
                )
                if curves:
                    history = client.get_metric_history(r.info.run_id, "train_loss")
                    records[-1]["curve"] = sorted((int(m.step), float(m.value)) for m in history)
    if stats is not None:
        stats["duplicates"] = duplicates
    return records


def distill_records(client: MlflowClient, suite: str | None = None) -> list[dict[str, Any]]:
    """Table 3 rows (one per distilled source) of the distill stages of each suite's latest run.

    Reads the stage-level artifacts (``chosen.json`` and ``front.json`` per source) that a distill stage
    logs when it finishes; see :func:`harness.stages.distill.distill_rows` for the columns.
    """
    import tempfile

    from harness.stages.distill import distill_rows
    from harness.stages.outputs import CHOSEN_FILE

    rows: list[dict[str, Any]] = []
    for exp in our_experiments(client, suite):
        latest = latest_suite_run(client, exp.experiment_id)
        if latest is None:
            continue
        for key in [k for k in latest.data.tags.get(f"{TAG}.stage_keys", "").split(",") if k]:
            run = completed_stage_run(client, exp.experiment_id, key)
            if run is None or run.data.tags.get(f"{TAG}.stage_kind") != "distill":
                continue
            with tempfile.TemporaryDirectory() as tmp:
                client.download_artifacts(run.info.run_id, "", tmp)
                found = distill_rows(
                    sorted(Path(tmp).rglob(CHOSEN_FILE)), run.data.tags.get(f"{TAG}.stage", "")
                )
            rows.extend({"suite": exp.name, **r} for r in found)
    return rows


def finished_trial_keys(client: MlflowClient, experiment_id: str, stage_key: str) -> set[str]:
    """``sl2o.trial_key`` of every trial of a stage key that has a FINISHED run (recorded, done)."""
    runs = find_runs(
        client,
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'trial' "
        "and attributes.status = 'FINISHED'",
    )
    return {k for r in runs if (k := r.data.tags.get(f"{TAG}.trial_key"))}
