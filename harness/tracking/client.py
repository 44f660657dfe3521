"""The driver's MLflow client: every call waits through a tracking outage instead of failing.

The runner's own MLflow calls (suite and stage runs, searches for runs to reuse or resume, a stage's
artifacts) are points the suite cannot pass without an answer, so :class:`ResilientClient` makes each one
wait, retrying transient failures for as long as it takes; while it waits it prints one line after
``SL2O_TRACKING_NOTICE_S`` (default 30 s) and then at doubling intervals.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from mlflow.tracking import MlflowClient

from harness.stages.outputs import TAG
from harness.tracking.delivery.ops import is_transient
from harness.tracking.delivery.queue import Notice, max_delay, notify, one_line, writer_for

T = TypeVar("T")

#: the tag that lets a retried ``create_run`` find the run its lost answer created
CREATE_TOKEN_TAG = f"{TAG}.create_token"

#: client methods that change the store (the rest only read it)
WRITES = frozenset(
    {
        "create_experiment",
        "create_run",
        "delete_experiment",
        "delete_run",
        "delete_tag",
        "log_artifact",
        "log_artifacts",
        "log_batch",
        "log_dict",
        "log_inputs",
        "log_metric",
        "log_param",
        "log_text",
        "restore_run",
        "set_experiment_tag",
        "set_tag",
        "set_terminated",
        "update_run",
    }
)
#: writes that cannot be left for later (their answer is needed)
_NEEDS_ANSWER = frozenset({"create_experiment", "create_run"})
_OWN = ("_uri", "_client", "_interrupted", "_wrote")


class ResilientClient:
    """An ``MlflowClient`` for ``uri`` whose calls wait through outages.

    * A call first waits until the trial writes queued before it are delivered
      (:meth:`~harness.tracking.delivery.queue.TrackingWriter.flush`), so a search sees every trial's record;
      a transient failure (:func:`~harness.tracking.delivery.ops.is_transient`) is retried with a growing
      pause, a refusal (a bad request, a missing run) is raised at once.
    * Only a client that has written waits: before its first write a call gets MLflow's own retries, so
      read-only commands fail on an unreachable server and never write. The first write delivers what
      earlier drivers of this workdir left undelivered
      (:meth:`~harness.tracking.delivery.queue.TrackingWriter.replay_orphans`).
    * ``create_run`` tags the run with a random ``sl2o.create_token``: a retry finds it instead of
      creating it twice.
    * After Ctrl-C (any ``BaseException`` out of a call) writes are queued for the background writer and
      reads get one try.
    """

    def __init__(self, uri: str, client: MlflowClient | None = None) -> None:
        self._uri = uri
        self._client = client or MlflowClient(uri)
        self._interrupted = False
        self._wrote = False

    @property
    def tracking_uri(self) -> str:
        return self._uri

    def __getattr__(self, name: str) -> Any:
        if name in _OWN:  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, attr, args, kwargs)

        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def __repr__(self) -> str:
        return f"ResilientClient({self._uri!r})"

    def _call(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        writer = writer_for(self._uri)
        if self._interrupted:
            if name in WRITES and name not in _NEEDS_ANSWER:
                return self._defer(name, fn, args, kwargs)
            return fn(*args, **kwargs)
        try:
            if name in WRITES and not self._wrote:
                self._wrote = True
                writer.replay_orphans()
            writer.flush()
            if not self._wrote:  # a reader (a report) is told at once, as MLflow's client would
                return fn(*args, **kwargs)
            if name == "create_run":
                return self._create_run(fn, args, kwargs)
            return self.retry(name, lambda: fn(*args, **kwargs))
        except Exception:
            raise
        except BaseException:
            self._interrupted = True  # Ctrl-C: from now on nothing waits
            raise

    def retry(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()``, retried through transient failures for as long as it takes."""
        start: float | None = None
        delay = 0.5
        notice = Notice()
        while True:
            try:
                return attempt()
            except Exception as err:
                if not is_transient(err) or self._interrupted:
                    raise
                now = time.monotonic()
                start = now if start is None else start
                down = writer_for(self._uri).down_since
                waited = now - min(start, down if down is not None else start)
                if notice.due(waited):
                    notify(
                        f"MLflow at {self._uri} unreachable for {waited:.0f} s, retrying; results are "
                        f"buffered ({what}: {one_line(err)})"
                    )
                time.sleep(delay)
                delay = min(delay * 2, max_delay())

    def _create_run(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        token = uuid.uuid4().hex
        bound.arguments["tags"] = {**(bound.arguments.get("tags") or {}), CREATE_TOKEN_TAG: token}
        experiment_id = bound.arguments["experiment_id"]
        tries = 0

        def attempt() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:  # did the try whose answer was lost create it?
                found = self._client.search_runs(
                    [experiment_id], f"tags.`{CREATE_TOKEN_TAG}` = '{token}'", max_results=1
                )
                if found:
                    return found[0]
            return fn(*bound.args, **bound.kwargs)

        return self.retry("create_run", attempt)

    def _defer(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
        """After Ctrl-C: queue a write for the background writer (delivered or journalled at exit)."""
        op = {"kind": "call", "method": name, "args": list(args), "kwargs": kwargs}
        try:
            json.dumps(op)
        except (TypeError, ValueError):  # not a plain write: one try now
            try:
                fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - the driver is exiting; say what was not written
                notify(f"MLflow at {self._uri}: {name} not recorded ({one_line(err)})")
            return
        writer_for(self._uri).submit(op)
