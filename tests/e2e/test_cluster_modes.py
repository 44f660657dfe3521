"""End to end on a real 2-node Ray cluster (127.0.0.2 + 127.0.0.3, 1 CPU each, token auth on): each way in.

* ``sl2o run --address auto`` on a node (the head's temp dir found through ``RAY_TMPDIR``);
* Ray Client ``sl2o run --address ray://head:port``: progress lines reach the client;
* ``ray job submit --working-dir DIR -- python -m harness.cli run ...`` (needs ``ray[default]``);
* an explicit ``host:port`` without the token: one error line at once, nothing created in MLflow.

The raylet-kill test (``test_cluster_failures.py``) starts its own cluster. Every process is stopped by the
PIDs these tests started (never ``ray stop``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.stages.outputs import TAG
from harness.testing.local_cluster import LocalCluster

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "harness.cli"]
RUN_TIMEOUT = 300

SUITE = {
    "name": "on-cluster",
    "resources": {"cpus_per_trial": 1},
    "stages": [
        {
            "kind": "evaluate",
            "name": "eval",
            "optimizees": [{"name": "quadratic_cos", "steps": 12000}],
            "log_every": 1000,
            "optimizers": [{"family": "adam", "lr": 0.01}, {"family": "sgd", "lr": 0.01}],
            "seeds": [0, 1],
        }
    ],
}


@pytest.fixture(scope="module")
def ray_cluster():
    with LocalCluster(nodes=2, cpus_per_node=1, dashboard=_has_jobs()) as c:
        yield c


def _has_jobs() -> bool:
    return (
        importlib.util.find_spec("aiohttp") is not None and importlib.util.find_spec("opencensus") is not None
    )


def _suite_file(folder: Path, name: str, steps: int = 12000) -> Path:
    """The suite under ``name``; trials of ``steps`` P1 steps (12000: ~2 s, long enough to spread)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    data = json.loads(json.dumps(SUITE))
    data["name"] = name
    data["stages"][0]["optimizees"][0]["steps"] = steps
    path.write_text(yaml.safe_dump(data))
    return path


def _trial_runs(uri: str, suite: str) -> list:
    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name(suite)
    assert exp is not None, f"no experiment {suite!r} in {uri}"
    return tracking.find_runs(
        client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial' and attributes.status = 'FINISHED'"
    )


def _nodes_used(workdir: Path) -> set[str]:
    """The node IPs Tune recorded for the trials (``node_ip`` in each trial's result.json)."""
    ips = set()
    for f in workdir.rglob("result.json"):
        for line in f.read_text().splitlines():
            if line.strip():
                ips.add(json.loads(line).get("node_ip"))
    return ips - {None}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def test_sl2o_run_address_auto_on_a_node_spreads_trials_over_both(ray_cluster, tmp_path: Path) -> None:
    suite = _suite_file(tmp_path, "via-auto")
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [*CLI, "run", str(suite), "--address", "auto", "--workdir", str(tmp_path / "wd")]
    out = _run(
        [*cmd, "--tracking-uri", uri, "--no-leaderboard"],
        tmp_path,
        ray_cluster.env(RAY_TMPDIR=str(ray_cluster.base)),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:] + ray_cluster.logs()
    assert "Ray cluster: 2 node(s) can read and write the workdir" in out.stdout
    runs = _trial_runs(uri, "via-auto")
    assert len(runs) == 4 and len({r.data.tags[f"{TAG}.trial_key"] for r in runs}) == 4
    assert _nodes_used(tmp_path / "wd") == {"127.0.0.2", "127.0.0.3"}


def test_ray_client_shows_progress_on_the_client(ray_cluster, tmp_path: Path) -> None:
    suite = _suite_file(tmp_path, "via-client", steps=1000)
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [
        *CLI,
        "run",
        str(suite),
        "--address",
        ray_cluster.client_address,
        "--workdir",
        str(tmp_path / "wd"),
    ]
    out = _run([*cmd, "--tracking-uri", uri, "--no-leaderboard"], tmp_path, ray_cluster.env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # Tune ran fit on the head; its progress callback's lines came back through the queue
    assert "[eval] 4/4 trials done" in out.stdout, out.stdout
    assert "suite 'via-client' finished" in out.stdout
    assert len(_trial_runs(uri, "via-client")) == 4


def test_ray_job_submit_runs_the_suite_on_the_cluster(ray_cluster, tmp_path: Path) -> None:
    if not _has_jobs():
        pytest.skip("ray job submit needs ray[default] (pip install 'symbolic-l2o[cluster]'); not installed")
    job_dir = tmp_path / "job"
    _suite_file(job_dir, "via-job", steps=1000)
    uri = f"sqlite:///{tmp_path}/m.db"
    entry = [sys.executable, "-m", "harness.cli", "run", "suite.yaml", "--workdir", str(tmp_path / "wd")]
    entry += ["--tracking-uri", uri, "--no-leaderboard"]
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray,
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_address,
        "--working-dir",
        str(job_dir),
        "--",
        *entry,
    ]
    out = _run(cmd, tmp_path, ray_cluster.env())
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in text, text[-4000:]
    assert "suite 'via-job' finished" in text  # the job's output, streamed by `ray job submit`
    assert len(_trial_runs(uri, "via-job")) == 4


def test_an_address_without_the_token_is_one_line_and_creates_nothing(ray_cluster, tmp_path: Path) -> None:
    suite = _suite_file(tmp_path, "no-token", steps=10)
    db = tmp_path / "m.db"
    cmd = [*CLI, "run", str(suite), "--address", ray_cluster.address, "--workdir", str(tmp_path / "wd")]
    start = time.time()
    out = _run([*cmd, "--tracking-uri", f"sqlite:///{db}"], tmp_path, ray_cluster.env(auth=False))
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the Ray cluster at"), out.stderr
    assert "RAY_AUTH_MODE=token" in err[0] and "Traceback" not in out.stdout + out.stderr
    assert time.time() - start < 30  # no 20 s of connection retries
    assert not db.exists()  # nothing created in MLflow
