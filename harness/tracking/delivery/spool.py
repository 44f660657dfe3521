"""The tracker's write-ahead journal: tracking writes survive an outage that outlasts the driver.

Each driver with undelivered writes keeps one ``flock``-ed journal, ``<pid>-<random>.jsonl``, under
``<workdir>/tracking-spool/<hash of the tracking URI>/`` (:func:`spool_dir`); its lines are ``{"seq", "op"}``
(a queued write), ``{"bind", "run_id"}`` (an attempt's run) and ``{"ack"}`` (delivered). It is deleted once
all is delivered; one left by a dead driver is claimed by the next (:func:`claim_orphans`). A trial's
artifacts are kept beside it (:func:`snapshot`) until delivered, so Tune may delete its checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPOOL_DIR = "tracking-spool"
SUFFIX = ".jsonl"


def spool_dir(root: Path, uri: str) -> Path:
    """The folder of ``uri``'s journals under ``root`` (``<workdir>/tracking-spool``)."""
    return root / hashlib.sha256(uri.encode()).hexdigest()[:12]


class Journal:
    """One process's journal of undelivered writes (created on the first write, held under a lock)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._fh: Any = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until removed
        fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._fh.flush()

    def op(self, seq: int, op: dict[str, Any]) -> None:
        self._write({"seq": seq, "op": op})

    def bind(self, handle: str, run_id: str | None) -> None:
        self._write({"bind": handle, "run_id": run_id})

    def ack(self, seq: int) -> None:
        self._write({"ack": seq})

    def release(self) -> None:
        """Stop writing and unlock, keeping the file for the next driver."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def remove(self) -> None:
        """Everything in it was delivered: delete it."""
        self.release()
        with contextlib.suppress(OSError):
            self.path.unlink()


def read_journal(text: str) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """The undelivered ops of a journal's text, in order, and the handles' run ids it recorded.

    A torn last line (the process died while writing it) is ignored.
    """
    ops: dict[int, dict[str, Any]] = {}
    acked: set[int] = set()
    bindings: dict[str, str | None] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "op" in rec:
            ops[int(rec["seq"])] = rec["op"]
        elif "ack" in rec:
            acked.add(int(rec["ack"]))
        elif "bind" in rec:
            bindings[str(rec["bind"])] = rec.get("run_id")
    return [op for seq, op in sorted(ops.items()) if seq not in acked], bindings


def claim_orphans(
    folder: Path, adopt: Callable[[list[dict[str, Any]], dict[str, str | None]], None]
) -> tuple[int, list[Path]]:
    """Hand the undelivered writes of every journal no live process holds to ``adopt``, oldest first.

    ``adopt`` must have made them its own (journalled them again) when it returns; the old file is then
    deleted. Returns the number of writes adopted and the files they came from.
    """
    if not folder.is_dir():
        return 0, []
    n, claimed = 0, []
    for path in sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, after the lock is used
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live driver is still delivering these
            ops, bindings = read_journal(fh.read())
            if ops:
                adopt(ops, bindings)
            n += len(ops)
            claimed.append(path)
            path.unlink()
        finally:
            fh.close()
    return n, claimed


def snapshot(src: str | Path, dest: Path) -> str:
    """A copy of folder ``src`` at ``dest`` (hard links where possible); ``src`` itself if it cannot be made."""

    def link_or_copy(a: str, b: str) -> Any:
        try:
            os.link(a, b)
            return b
        except OSError:
            return shutil.copy2(a, b)

    try:
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest, copy_function=link_or_copy)
        return str(dest)
    except OSError:
        return str(src)
