"""What the background writer does with each queued tracking write (an "op": a plain JSON-able dict).

The Tune callback (:mod:`harness.tracking.trials`) never calls MLflow; it queues ops that name a trial
attempt by a *handle* (a fresh id per attempt), since its run id only exists once the run is created.
:func:`execute` runs one op; every op may run more than once (a retry after a lost answer, a replay after a
crash) and leaves the same result, so a journalled write is replayed without creating its run twice.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from harness.stages.outputs import DATASET_FILE, TAG
from harness.tracking.datasets import sr_dataset_input
from harness.tracking.runs import find_runs, log_batch, start_run

#: HTTP answers that waiting can cure
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def is_transient(err: BaseException) -> bool:
    """An error that waiting cures: no answer from the server (refused, reset, timed out, or MLflow's own
    retries spent on 429/5xx answers), an answer of 429 or 5xx, or a locked SQLite store."""
    import requests

    retryable = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        requests.exceptions.ChunkedEncodingError,
        ConnectionError,
        TimeoutError,
    )
    for e in (err, err.__cause__):
        if isinstance(e, requests.exceptions.HTTPError) and e.response is not None:
            if e.response.status_code in TRANSIENT_STATUS:
                return True
        elif isinstance(e, retryable):
            return True
        elif isinstance(e, MlflowException):
            msg = str(e.message)
            if e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
                return True
            if "database is locked" in msg:
                return True
            if msg.startswith("API request to") and (
                "failed with exception" in msg or "failed with timeout exception" in msg
            ):
                return True
    return False


#: the tag that ties a trial run to the tracker attempt (handle) that created it
HANDLE_TAG = f"{TAG}.attempt"

Bind = Callable[[str, "str | None"], None]


def describe(op: dict[str, Any]) -> str:
    """A short name of an op for messages (``complete of trial sgd(lr=0.1) · p1 · 0``)."""
    if op.get("kind") == "call":
        return f"{op.get('method')} call"
    return f"{op.get('kind')} of trial {op.get('label') or op.get('handle')}"


def execute(client: Any, op: dict[str, Any], bindings: dict[str, str | None], bind: Bind) -> None:
    """Run ``op`` against ``client``; ``bindings`` maps handles to run ids (None: attempt not recorded).

    ``bind(handle, run_id)`` records a handle's run as soon as it is known. Op kinds:

    * ``start``: adopt the run of the trial's key tagged with this handle, else skip the attempt if another
      run of the key is FINISHED, else delete the unfinished ones and create the run (params, training input);
    * ``log``: metrics and tags; ``error``: error tags, status FAILED; ``discard``: delete the run;
    * ``complete``: artifacts, the collected dataset input, status FINISHED (a replayed completion whose
      trial was meanwhile recorded by another run deletes its own run instead);
    * ``call``: a client method by name (the runner's writes after Ctrl-C).
    """
    kind = op["kind"]
    if kind == "call":
        getattr(client, op["method"])(*op.get("args", ()), **op.get("kwargs", {}))
        return
    handle = op["handle"]
    if kind == "start":
        _start(client, op, bindings, bind)
        return
    rid = bindings.get(handle)
    if rid is None:  # the attempt is not recorded (its trial was already), or its start was refused
        return
    if kind == "log":
        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in op.get("metrics", ())]
        log_batch(client, rid, metrics=metrics, tags=op.get("tags") or None)
    elif kind == "complete":
        _complete(client, op, rid, bind)
    elif kind == "error":
        log_batch(client, rid, tags=op["tags"])
        client.set_terminated(rid, status="FAILED")
    elif kind == "discard":
        client.delete_run(rid)
        bind(handle, None)
    else:
        raise ValueError(f"unknown tracking op {kind!r}")


def _key_runs(client: Any, op: dict[str, Any]) -> list[Any]:
    return find_runs(
        client,
        [op["experiment_id"]],
        f"tags.`{TAG}.trial_key` = '{op['trial_key']}' and tags.`{TAG}.kind` = 'trial'",
    )


def _start(client: Any, op: dict[str, Any], bindings: dict[str, str | None], bind: Bind) -> None:
    handle = op["handle"]
    if handle not in bindings:
        earlier = _key_runs(client, op)
        mine = [r for r in earlier if r.data.tags.get(HANDLE_TAG) == handle]
        if mine:  # an earlier try of this op created it (its answer was lost, or the driver died)
            bind(handle, mine[0].info.run_id)
        elif any(r.info.status == "FINISHED" for r in earlier):
            bind(handle, None)  # recorded once already: this attempt is not recorded again
        else:
            for r in earlier:  # unfinished attempts (killed or errored) are replaced by this one
                client.delete_run(r.info.run_id)
            tags = {**op["tags"], HANDLE_TAG: handle}
            bind(handle, start_run(client, op["experiment_id"], op["name"], tags, op["parent_run_id"]))
    rid = bindings.get(handle)
    if rid is None:
        return
    log_batch(client, rid, params=op.get("params") or {})
    if op.get("dataset"):
        _log_dataset(client, rid, op["dataset"], "training")


def _complete(client: Any, op: dict[str, Any], rid: str, bind: Bind) -> None:
    if op.get("replayed") and any(
        r.info.status == "FINISHED" and r.info.run_id != rid for r in _key_runs(client, op)
    ):
        client.delete_run(rid)  # a later driver recorded this trial while these writes waited
        bind(op["handle"], None)
        return
    art = op.get("artifacts")
    if art and os.path.isdir(art):
        client.log_artifacts(rid, art)
        if os.path.isfile(os.path.join(art, DATASET_FILE)):
            root = client.get_run(rid).info.artifact_uri
            uri = f"{root.rstrip('/')}/{DATASET_FILE}" if root else None
            _log_dataset(client, rid, os.path.join(art, DATASET_FILE), "collected", uri)
    client.set_terminated(rid, status="FINISHED")


def _log_dataset(client: Any, rid: str, path: str, context: str, source_uri: str | None = None) -> None:
    """Log the SR dataset ``path`` as an input of run ``rid``; one that cannot be read is left out."""
    try:
        dataset = sr_dataset_input(path, context, source_uri)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile):
        return
    try:
        client.log_inputs(rid, datasets=[dataset])
    except MlflowException as err:
        if is_transient(err):
            raise  # the server is away: retried with the rest of the op
