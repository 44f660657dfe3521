"""Helpers for the end-to-end tests that interrupt a running ``sl2o run`` and resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def _cli_run_command(suite: dict, tmp_path: Path, uri: str, address: str) -> list[str]:
    """Write ``suite`` to a file and return the ``sl2o run`` command for it on the shared Ray session."""
    suite_file = tmp_path / f"{suite['name']}.yaml"
    suite_file.write_text(yaml.safe_dump(suite))
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite_file), "--tracking-uri", uri]
    return cmd + ["--workdir", str(tmp_path), "--address", address, "--no-leaderboard"]


def _run_and_interrupt(cmd: list[str], cwd: Path, until: Callable[[], Any], timeout: float = 240) -> Any:
    """Start ``cmd``, poll ``until()`` every 0.5 s, send Ctrl-C once it returns something truthy.

    Returns that value; fails if the command ends (or the time runs out) first. ``until`` may raise
    while the tracking DB is being written to; that counts as not yet.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, value = time.time() + timeout, None
    while time.time() < deadline and proc.poll() is None and not value:
        time.sleep(0.5)
        try:
            value = until()
        except Exception:  # noqa: BLE001 - runs appear while we poll
            value = None
    assert proc.poll() is None and value, proc.communicate()[0] if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return value


@pytest.fixture
def cli_run_command() -> Callable[..., list[str]]:
    return _cli_run_command


@pytest.fixture
def run_and_interrupt() -> Callable[..., Any]:
    return _run_and_interrupt
