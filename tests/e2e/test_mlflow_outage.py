"""End to end: the MLflow server dies in the middle of ``sl2o run`` and stays down for longer than the
MLflow client's retry budget; the suite goes on, waits for the server at the stage's end, and when the
server is back (same port, same store) every trial is recorded exactly once and the leaderboard is whole.

The server is a real ``mlflow server`` process (``harness.testing.mlflow_server``), crashed with SIGKILL to its
own process group and restarted; nothing else is stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.report import leaderboard as report
from harness.stages.outputs import TAG
from harness.testing.mlflow_server import MlflowServer

pytestmark = pytest.mark.e2e

N_TRIALS = 6


def _finals(tune_dir: Path) -> int:
    """Trials whose last report to Tune is their final one (read from Tune's own result files)."""
    n = 0
    for res in tune_dir.rglob("result.json"):
        lines = res.read_text().strip().splitlines()
        n += bool(lines) and bool(json.loads(lines[-1]).get("final"))
    return n


def test_a_suite_survives_an_mlflow_outage_longer_than_the_clients_retry_budget(
    ray_session, tmp_path: Path
) -> None:
    suite = {
        "name": "outage",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 10000}],
                "optimizers": [{"family": "adam", "lr": 0.1 / 2**i} for i in range(N_TRIALS)],
                "seeds": [0],
                "max_concurrent": 1,
            }
        ],
    }
    suite_file = tmp_path / "outage.yaml"
    suite_file.write_text(yaml.safe_dump(suite))
    server = MlflowServer(tmp_path / "server").start()
    env = dict(
        os.environ,
        # MLflow's own budget: no retries, 2 s timeout; the outage below lasts several times longer
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="2",
        SL2O_TRACKING_RETRY_MAX_S="1",
        SL2O_TRACKING_NOTICE_S="2",
    )
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite_file), "--tracking-uri", server.uri]
    cmd += ["--workdir", str(tmp_path / "work"), "--address", address, "--no-leaderboard"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tune_dir = tmp_path / "work" / "tune" / "outage"
    try:
        deadline = time.monotonic() + 90
        while _finals(tune_dir) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        server.kill()
        down_at, finals_at_kill = time.monotonic(), _finals(tune_dir)
        # down until Tune has run every trial (the queue holds their records), and at least 8 s
        while (time.monotonic() - down_at < 8 or _finals(tune_dir) < N_TRIALS) and proc.poll() is None:
            assert time.monotonic() - down_at < 90, "Tune's loop stalled while MLflow was down"
            time.sleep(0.2)
        assert proc.poll() is None, "the suite ended while MLflow was down: " + proc.communicate()[0]
        time.sleep(2)  # the runner now waits at the stage's end
        outage = time.monotonic() - down_at
        server.start()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert proc.returncode == 0, out
        assert finals_at_kill < N_TRIALS and outage > 8, out
        # Tune ran the remaining trials while MLflow was down (the callback only queued their records),
        # then the runner waited for the server at the stage's end, saying so, instead of failing
        assert f"{N_TRIALS}/{N_TRIALS} trials done" in out.split(f"MLflow at {server.uri} unreachable (")[1]
        assert f"MLflow at {server.uri} unreachable for" in out and "results are buffered" in out, out
        assert "reachable again" in out, out

        client = tracking.init_tracking(server.uri)
        (exp,) = tracking.our_experiments(client, "outage")
        runs = tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial'")
        keys = [r.data.tags[f"{TAG}.trial_key"] for r in runs]
        assert len(runs) == N_TRIALS and len(set(keys)) == N_TRIALS  # one record per trial, none twice
        assert all(r.info.status == "FINISHED" and "final_train_loss" in r.data.metrics for r in runs)
        for r in runs:  # the whole curve of each, including the points sent while the server was down
            history = client.get_metric_history(r.info.run_id, "train_loss")
            assert history and max(m.step for m in history) >= 9900
        (stage,) = tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'stage'")
        assert stage.info.status == "FINISHED" and stage.data.tags[f"{TAG}.complete"] == "true"
        rows = report.aggregate(tracking.leaderboard_records(client, "outage"))
        assert len(rows) == N_TRIALS and all(r["n"] == 1 for r in rows)
        assert not list((tmp_path / "work" / "tracking-spool").rglob("*.jsonl"))  # nothing left over
    finally:
        server.stop()
        os.environ.pop("RAY_ADDRESS", None)
