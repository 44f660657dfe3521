"""Tracking writes that never block Ray Tune: one queue and one delivery thread per tracking URI.

The Tune callback only calls :meth:`TrackingWriter.submit` (the op is journalled first); a daemon thread
delivers the ops in the order queued, retrying transient failures with a pause growing from 0.5 s to
``SL2O_TRACKING_RETRY_MAX_S`` (default 15 s), and reports and drops a write MLflow refuses outright. At exit
it waits up to ``SL2O_TRACKING_EXIT_WAIT`` seconds (default 15); what is still undelivered stays in the
journal (:mod:`harness.tracking.delivery.spool`) and is delivered by the next driver of the same workdir.
"""

from __future__ import annotations

import atexit
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from harness.tracking.delivery.ops import describe, execute, is_transient
from harness.tracking.delivery.spool import SPOOL_DIR, Journal, claim_orphans, snapshot, spool_dir


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def notice_seconds() -> float:
    """How long a wait on MLflow lasts before it is reported (``SL2O_TRACKING_NOTICE_S``, default 30)."""
    return _env_seconds("SL2O_TRACKING_NOTICE_S", 30.0)


def max_delay() -> float:
    """The longest pause between two tries of a write (``SL2O_TRACKING_RETRY_MAX_S``, default 15)."""
    return max(0.1, _env_seconds("SL2O_TRACKING_RETRY_MAX_S", 15.0))


def exit_wait() -> float:
    """How long a driver's exit waits for undelivered writes (``SL2O_TRACKING_EXIT_WAIT``, default 15)."""
    return _env_seconds("SL2O_TRACKING_EXIT_WAIT", 15.0)


def notify(message: str) -> None:
    """One line about the tracking server's state, on stderr (stdout carries the suite's progress)."""
    print(message, file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    """The gist of an error: the OS's reason for a failed connection, else its first line."""
    text = str(err)
    reason = re.search(r"\[Errno -?\d+\][^'\")\]]*", text)
    if reason:
        return reason.group(0).strip()
    if "timeout" in text.lower() and text.startswith("API request to"):
        return "timed out"
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


#: MLflow's own HTTP retries, when the user sets none: short, since every call the harness makes is
#: retried for as long as an outage lasts anyway (MLflow's default budget is about 4 minutes per call)
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def quick_http_retries(uri: str) -> None:
    """Shorten MLflow's own retries for a server URI in this process (unless the user set them)."""
    if uri.startswith(("http://", "https://")):
        for k, v in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(k, v)


class Notice:
    """When a wait is worth a line: after ``notice_seconds()``, then at doubling intervals (at most 5 min)."""

    def __init__(self) -> None:
        self.every = notice_seconds()
        self.next = self.every

    def due(self, waited: float) -> bool:
        if waited < self.next:
            return False
        self.every = min(max(self.every * 2, 1.0), 300.0)
        self.next = waited + self.every
        return True


class TrackingWriter:
    """The queue of tracking writes to one URI and the thread that delivers them (see the module doc)."""

    def __init__(self, uri: str, folder: Path | None) -> None:
        self.uri = uri
        self.folder = folder
        quick_http_retries(uri)
        self.client = MlflowClient(uri)
        self.bindings: dict[str, str | None] = {}
        #: when the current outage began (``time.monotonic()``), None while MLflow answers
        self.down_since: float | None = None
        self.last_error = ""
        self._q: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._delivered = 0
        self._journal: Journal | None = None
        self._no_journal = ""  # why writes are not journalled (the folder could not be written)
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Writes queued and not yet delivered (or dropped)."""
        with self._cond:
            return self._submitted - self._delivered

    # -- the producer side: never waits on MLflow ----------------------------------------------
    def submit(self, op: dict[str, Any]) -> None:
        """Queue ``op`` (journalled first); returns at once."""
        with self._cond:
            self._submitted += 1
            seq = self._submitted
            self._open_journal()
            self._journal_write(lambda j: j.op(seq, op))
            self._q.put((seq, op))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="sl2o-tracking", daemon=True)
                self._thread.start()

    def snapshot(self, src: str, name: str) -> str:
        """Keep the files of folder ``src`` until they are delivered (Tune may delete its checkpoints)."""
        if self.folder is None:
            return src
        return snapshot(src, self.folder / "snapshots" / name)

    def _open_journal(self) -> Journal | None:
        if self._journal is None and self.folder is not None and not self._no_journal:
            try:
                self._journal = Journal(self.folder)
            except OSError as err:
                self._drop_journal(f"cannot write {self.folder}: {err}")
        return self._journal

    def _drop_journal(self, why: str) -> None:
        self._no_journal = why
        notify(
            f"tracking writes to {self.uri} are not journalled ({why}); an exit during an outage loses them"
        )
        if self._journal is not None:
            self._journal.release()
            self._journal = None

    def _bind(self, handle: str, run_id: str | None) -> None:
        with self._cond:
            self.bindings[handle] = run_id
            self._journal_write(lambda j: j.bind(handle, run_id))

    def _journal_write(self, write: Callable[[Journal], None]) -> None:
        """Append to the journal (caller holds the lock); a journal that cannot be written is given up."""
        if self._journal is not None:
            try:
                write(self._journal)
            except (OSError, ValueError) as err:
                self._drop_journal(f"cannot write {self._journal.path}: {err}")

    # -- the delivery thread ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            seq, op = self._q.get()
            self._deliver(op)
            with self._cond:
                self._delivered += 1
                self._journal_write(lambda j, seq=seq: j.ack(seq))
                if self._journal is not None and self._delivered == self._submitted:
                    self._journal.remove()  # nothing undelivered: no journal on disk
                    self._journal = None
                self._cond.notify_all()
            if op.get("snapshot") and op.get("artifacts"):
                shutil.rmtree(op["artifacts"], ignore_errors=True)

    def _deliver(self, op: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                execute(self.client, op, self.bindings, self._bind)
            except Exception as err:  # noqa: BLE001 - whatever MLflow raises, the queue goes on
                if is_transient(err):
                    self.last_error = one_line(err)
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        notify(
                            f"MLflow at {self.uri} unreachable ({self.last_error}); trial results are "
                            "buffered and delivered when it is back"
                        )
                    time.sleep(delay)
                    delay = min(delay * 2, max_delay())
                    continue
                notify(f"MLflow at {self.uri} refused a tracking write ({describe(op)}): {one_line(err)}")
            if self.down_since is not None:
                notify(
                    f"MLflow at {self.uri} reachable again after {time.monotonic() - self.down_since:.0f} s; "
                    f"delivering {self.pending} buffered writes"
                )
                self.down_since = None
            return

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """True once every write submitted before this call is delivered; False after ``timeout`` s."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._delivered < target:
                left = 1.0 if end is None else end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def flush(self) -> None:
        """Wait (as long as it takes) until the queue is delivered, saying so while MLflow is away."""
        notice = Notice()
        start = time.monotonic()
        while not self.wait(0.5):
            since = min(start, self.down_since or start)
            waited = time.monotonic() - since
            if self.down_since is not None and notice.due(waited):
                notify(
                    f"MLflow at {self.uri} unreachable for {waited:.0f} s, retrying; results are buffered "
                    f"({self.pending} writes pending)"
                )

    def replay_orphans(self) -> int:
        """Queue the writes that earlier drivers of this workdir left undelivered (journals no live
        process holds)."""
        if self.folder is None:
            return 0

        def adopt(ops: list[dict[str, Any]], bindings: dict[str, str | None]) -> None:
            for handle, run_id in bindings.items():
                if handle not in self.bindings:
                    self._bind(handle, run_id)
            for op in ops:
                self.submit({**op, "replayed": True})

        n, files = claim_orphans(self.folder, adopt)
        if n:
            notify(
                f"delivering {n} tracking writes an earlier driver left undelivered ({len(files)} journal(s))"
            )
        return n

    def close(self, timeout: float) -> None:
        """At exit: wait up to ``timeout`` s for the queue; keep what is left in the journal."""
        n = self.pending
        if not n:
            return
        notify(f"delivering {n} buffered tracking writes to {self.uri} (waiting up to {timeout:.0f} s)")
        if self.wait(timeout):
            return
        with self._cond:
            journal, self._journal = self._journal, None
            n = self._submitted - self._delivered
        if journal is not None:
            journal.release()
            notify(
                f"MLflow at {self.uri} still unreachable: {n} tracking writes kept in {journal.path}; "
                "the next `sl2o run` with the same --workdir and --tracking-uri delivers them"
            )
        else:
            notify(f"MLflow at {self.uri} still unreachable: {n} tracking writes lost ({self._no_journal})")


# ---------------------------------------------------------------------------------------------
# one writer per tracking URI in this process
# ---------------------------------------------------------------------------------------------
_WRITERS: dict[str, TrackingWriter] = {}
_ROOTS: dict[str, Path] = {}
_LOCK = threading.Lock()


def set_spool_root(uri: str, root: str | Path) -> None:
    """Journal ``uri``'s undelivered writes under ``root`` (a workdir's ``tracking-spool``)."""
    folder = spool_dir(Path(root), uri)
    with _LOCK:
        _ROOTS[uri] = folder
        writer = _WRITERS.get(uri)
        if writer is not None and writer.pending == 0:
            writer.folder = folder


def remember_workdir(uri: str, workdir: str | Path) -> None:
    """``uri`` is used by the runs of ``workdir``: its journals go to ``<workdir>/tracking-spool``."""
    text = str(workdir)
    if "://" in text and not text.startswith("file://"):
        return  # a storage URI: no local folder to journal in (the default spool folder is used)
    set_spool_root(uri, Path(text.removeprefix("file://")).resolve() / SPOOL_DIR)


def _default_folder(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        return spool_dir(Path(uri[len("sqlite:///") :]).parent / SPOOL_DIR, uri)
    return spool_dir(Path.home() / ".cache" / "sl2o" / SPOOL_DIR, uri)


def writer_for(uri: str) -> TrackingWriter:
    """This process's writer for ``uri`` (created on first use; flushed when the process exits)."""
    with _LOCK:
        writer = _WRITERS.get(uri)
        if writer is None:
            if not _WRITERS:
                atexit.register(close_all)
            writer = TrackingWriter(uri, _ROOTS.get(uri) or _default_folder(uri))
            _WRITERS[uri] = writer
        return writer


def close_all(timeout: float | None = None) -> None:
    """Flush every writer (bounded by ``timeout``, default :func:`exit_wait`), keeping the rest journalled."""
    for writer in list(_WRITERS.values()):
        writer.close(exit_wait() if timeout is None else timeout)
