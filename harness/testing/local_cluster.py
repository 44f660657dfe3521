"""A real multi-node Ray cluster on this machine's loopback addresses, for end-to-end tests and benchmarks.

Each node is one ``ray start --block`` process in its own session, ``--temp-dir`` and loopback address
(127.0.0.2, 127.0.0.3, ...), on free ports, with token authentication (``RAY_AUTH_MODE=token``) as on a real
cluster. Stopping it signals only its own process groups, never ``ray stop``. Usage::

    with LocalCluster(nodes=2, cpus_per_node=1) as c:
        subprocess.run([..., "--address", c.address], env=c.env())
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: how long a node may take to start (a shared 2-core machine can be slow)
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
_READY = "block forever"


def free_port() -> int:
    """A TCP port free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_executable() -> str:
    """The ``ray`` command of this Python environment."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


@dataclass
class Node:
    ip: str
    temp_dir: Path
    proc: subprocess.Popen
    log: Path
    head: bool

    def raylet_pid(self) -> int | None:
        """The PID of this node's raylet (a descendant of its ``ray start`` process), if it runs."""
        children: dict[int, list[int]] = {}
        names: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            names[int(entry.name)] = comm
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                if names.get(child) == "raylet":
                    return child
                todo.append(child)
        return None


@dataclass
class LocalCluster:
    """``nodes`` Ray nodes on 127.0.0.2.., ``cpus_per_node`` CPUs each; a context manager."""

    nodes: int = 2
    cpus_per_node: int = 1
    dashboard: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    started: list[Node] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    base: Path | None = None

    def __post_init__(self) -> None:
        self.gcs_port = free_port()
        self.client_port = free_port()
        self.dashboard_port = free_port()

    # -- addresses ----------------------------------------------------------------------------------
    @property
    def head_ip(self) -> str:
        return "127.0.0.2"

    @property
    def address(self) -> str:
        """The GCS address (``host:port``), as ``sl2o run --address`` takes it."""
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        """The Ray Client address (``ray://host:port``)."""
        return f"ray://{self.head_ip}:{self.client_port}"

    @property
    def dashboard_address(self) -> str:
        """The head's dashboard (jobs API), as ``ray job submit --address`` takes it."""
        return f"http://{self.head_ip}:{self.dashboard_port}"

    def env(self, auth: bool = True, **extra: str) -> dict[str, str]:
        """An environment for processes of this cluster (nodes, drivers): its token, no RAY_ADDRESS."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_AUTH_MODE", None)
        if auth:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN"] = self.token
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        env.setdefault("RAY_DEDUP_LOGS", "1")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env.update(self.extra_env)
        env.update(extra)
        return env

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        self.base = Path(tempfile.mkdtemp(prefix="sl2o-rc-", dir="/tmp"))  # short: Unix socket paths
        try:
            for i in range(self.nodes):
                self.add_node(head=(i == 0))
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, head: bool = False) -> Node:
        assert self.base is not None, "start() first"
        i = len(self.started)
        ip = f"127.0.0.{2 + i}"
        # the head's temp dir is <base>/ray so that `--address auto` finds it with RAY_TMPDIR=<base>
        temp_dir = self.base / ("ray" if head else f"n{i}")
        temp_dir.mkdir(parents=True, exist_ok=True)
        cmd = [ray_executable(), "start", "--block", "--disable-usage-stats", "--node-ip-address", ip]
        cmd += ["--num-cpus", str(self.cpus_per_node), "--num-gpus", "0", "--temp-dir", str(temp_dir)]
        cmd += ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        cmd += ["--runtime-env-agent-port", str(free_port())]
        if head:
            cmd += ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(self.client_port)]
            cmd += ["--include-dashboard", "true" if self.dashboard else "false"]
            if self.dashboard:
                cmd += ["--dashboard-host", self.head_ip, "--dashboard-port", str(self.dashboard_port)]
        else:
            cmd += ["--address", self.address]
        log = self.base / f"node{i}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
            )
        node = Node(ip, temp_dir, proc, log, head)
        self.started.append(node)
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            text = log.read_text(errors="replace")
            if _READY in text:
                return node
            if proc.poll() is not None:
                raise RuntimeError(f"ray node {i} exited with {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(
            f"ray node {i} did not start in {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}"
        )

    def kill_raylet(self, i: int) -> int:
        """SIGKILL node ``i``'s raylet (by PID), as a crashed machine would; returns the PID."""
        pid = self.started[i].raylet_pid()
        assert pid is not None, f"node {i} has no raylet"
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Stop every node this cluster started: SIGTERM its ``ray start``, then SIGKILL its group."""
        for node in reversed(self.started):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT_S
        for node in reversed(self.started):
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group is the node's own (start_new_session): its leftover processes only
                os.killpg(node.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if node.proc.poll() is None:
                node.proc.wait(timeout=10)
        self.started.clear()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        """The tail of each node's ``ray start`` output (for a failing test's message)."""
        return "\n".join(
            f"--- node {i}\n{n.log.read_text(errors='replace')[-1500:]}" for i, n in enumerate(self.started)
        )
