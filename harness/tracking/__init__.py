"""MLflow glue: tracking URIs, suite/stage parent runs, per-trial child runs, leaderboard queries.

Trials never talk to MLflow themselves: they report metrics (and, in batches, their loss curves) to
Ray Tune, and ``TrialTracker`` -- a Tune callback in the driver -- records one child run per trial.
That keeps a single writer on the SQLite store and works unchanged against an ``mlflow server``.

A tracking outage of any length loses nothing and stops nothing: the callback only queues its writes
for a background thread that delivers them in order and retries through outages (journalled on disk,
so a driver that exits meanwhile leaves them for the next one), and the client :func:`init_tracking`
returns waits through outages at the runner's own calls. This module is the facade; the parts:

* :mod:`harness.tracking.runs`: run primitives and queries (create, log in batches, find, close);
* :mod:`harness.tracking.trials`: the Tune callback (:class:`TrialTracker`);
* :mod:`harness.tracking.delivery.queue`: the per-URI write queue and its delivery thread;
* :mod:`harness.tracking.delivery.spool`: the write-ahead journal under ``<workdir>/tracking-spool``;
* :mod:`harness.tracking.delivery.ops`: what each queued write does, and which errors are worth waiting out;
* :mod:`harness.tracking.client`: :class:`ResilientClient`, the runner's waiting client;
* :mod:`harness.tracking.datasets`: the SR dataset as an MLflow dataset input;
* :mod:`harness.tracking.queries`: leaderboard and Table 3 queries;
* :mod:`harness.testing.mlflow_server`: start and stop a local ``mlflow server`` (tests, single machines).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.stages.outputs import TAG
from harness.tracking.client import ResilientClient
from harness.tracking.datasets import sr_dataset_input
from harness.tracking.delivery.queue import (
    close_all,
    quick_http_retries,
    remember_workdir,
    set_spool_root,
    writer_for,
)
from harness.tracking.queries import distill_records, leaderboard_records, trial_horizon
from harness.tracking.runs import (
    close_orphan_runs,
    close_stale_trial_runs,
    completed_stage_run,
    find_runs,
    finished_trial_keys,
    finite_metrics,
    latest_suite_run,
    log_batch,
    our_experiments,
    start_run,
)
from harness.tracking.trials import TrialTracker

__all__ = [
    "DEFAULT_DB",
    "ResilientClient",
    "TrialTracker",
    "artifact_root_for",
    "close_all",
    "close_orphan_runs",
    "close_stale_trial_runs",
    "completed_stage_run",
    "default_tracking_uri",
    "distill_records",
    "ensure_experiment",
    "find_runs",
    "finished_trial_keys",
    "finite_metrics",
    "init_tracking",
    "latest_suite_run",
    "leaderboard_records",
    "log_batch",
    "our_experiments",
    "resolve_tracking_uri",
    "sr_dataset_input",
    "start_run",
    "trial_horizon",
    "writer_for",
]

DEFAULT_DB = "mlflow.db"


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<absolute path>/mlflow.db`` (MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{(Path(workdir).resolve() / DEFAULT_DB)}"


def resolve_tracking_uri(uri: str | None, workdir: str | Path | None = None) -> str:
    """The URI to use: explicit > ``MLFLOW_TRACKING_URI`` > the default SQLite file.

    A relative ``sqlite:///`` path is made absolute so Ray workers in other directories agree. With a
    ``workdir``, tracking writes to this URI that cannot be delivered are journalled under
    ``<workdir>/tracking-spool`` (see :mod:`harness.tracking.delivery.spool`).
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir or ".")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = f"sqlite:///{Path(rel).resolve()}"
    elif "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is not a URI; use sqlite:///<path>/mlflow.db or http://host:5000 "
            "(MLflow 3 no longer supports a plain directory store)"
        )
    if workdir is not None:
        remember_workdir(uri, workdir)
    return uri


def init_tracking(uri: str, spool_dir: str | Path | None = None) -> MlflowClient:
    """Point MLflow at ``uri`` (create the SQLite DB now, in the driver, before trials start).

    One call checks the store answers; it raises when it does not (nothing has started yet). The client
    returned is a :class:`ResilientClient`: from then on, its calls wait through outages. ``spool_dir``
    is where undelivered writes are journalled (default: ``<workdir>/tracking-spool`` of the workdir
    given to :func:`resolve_tracking_uri`).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if spool_dir is not None:
        set_spool_root(uri, spool_dir)
    # every call goes through an MlflowClient bound to ``uri``; mlflow.set_tracking_uri is not used because
    # it exports MLFLOW_TRACKING_URI, which would then override the next command's own choice in-process
    if not uri.startswith("sqlite:///"):
        quick_http_retries(uri)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        return cast(MlflowClient, ResilientClient(uri, client))
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    # creating and migrating a new store is serialized: two suites started at once on a fresh store
    # would otherwise race in MLflow's schema migration ("duplicate column name")
    with _file_lock(db.with_name(db.name + ".lock")):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # runs the schema migrations once, here
    return cast(MlflowClient, ResilientClient(uri, client))


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
