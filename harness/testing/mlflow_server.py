"""A local ``mlflow server`` process: its own store, 127.0.0.1 on a free port, stopped by its own PID.

For tests and single machines (``with MlflowServer(tmp) as server: ... server.uri``). The server runs
in a new session, so stopping it (:meth:`MlflowServer.kill`, :meth:`MlflowServer.stop`) signals that
process group only: the server and the workers it started, nothing else. A restart reuses the port
and the store, as a real server coming back after a crash would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` with the SQLite store ``<root>/mlflow.db`` and proxied artifacts in ``<root>/artifacts``."""

    def __init__(self, root: str | Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.root = Path(root)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        """Start the server and wait until it answers ``/health`` (raises with its log if it does not)."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--host", self.host, "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as res:
                    if res.status == 200:
                        return self
            time.sleep(0.25)
        self.kill()
        log_tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"mlflow server on port {self.port} did not start:\n{log_tail}")

    def _signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # the group this server's own session started

    def kill(self) -> None:
        """Crash it: SIGKILL to its process group (what an outage looks like to the clients)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it politely (SIGTERM), then by force."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
