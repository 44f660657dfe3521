"""End to end: a stage kind from a plug-in package (``tests/plugins``), found through the
``symbolic_l2o.stages`` entry-point group, validated and run by ``sl2o`` through Ray Tune and MLflow
with no change to ``harness/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.stages.outputs import TAG

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "plugins"


def test_plugin_stage_kind_runs_through_the_runner(tmp_path: Path) -> None:
    suite = {
        "name": "plugin-probe",
        "stages": [
            {
                "kind": "lr_probe",
                "name": "probe",
                "optimizees": [{"name": "quadratic_cos"}],
                "lrs": [0.01, 0.001],
                "steps": 15,
            }
        ],
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(suite))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])
    cli = [sys.executable, "-m", "harness.cli"]

    # without the plug-in on the path the kind is unknown, and the error says where kinds come from
    bare = subprocess.run([*cli, "validate", str(path)], cwd=tmp_path, capture_output=True, text=True)
    assert bare.returncode == 2 and "symbolic_l2o.stages" in bare.stderr, bare.stderr

    ok = subprocess.run([*cli, "validate", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = dict(suite, stages=[dict(suite["stages"][0], steps=0)])
    path.with_name("bad.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run(
        [*cli, "validate", str(path.with_name("bad.yaml"))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "stages[0].steps: Input should be greater than 0" in res.stderr, res.stderr

    # a plug-in must be importable where trials run: pip-installed on every node of a cluster; here the
    # run starts its own local Ray, whose workers inherit PYTHONPATH (the shared session's would not)
    uri = f"sqlite:///{tmp_path}/m.db"
    run = subprocess.run(
        [*cli, "run", str(path), "--tracking-uri", uri, "--workdir", str(tmp_path), "--no-leaderboard"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[probe] finished: 2 trials ok, 0 errored" in run.stdout, run.stdout

    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name("plugin-probe")
    trials = tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial'")
    assert len(trials) == 2
    assert {r.data.tags[f"{TAG}.stage_kind"] for r in trials} == {"lr_probe"}
    assert {r.data.tags[f"{TAG}.lr"] for r in trials} == {"0.01", "0.001"}
    for r in trials:
        assert r.info.status == "FINISHED" and r.data.metrics["final_train_loss"] > 0
        # every trial of any kind (a plug-in's too) records its cost and node, measured by the trainable
        m = r.data.metrics
        assert 0 < m["cost_cpu_s"] and 0 < m["cost_wall_s"] and "cost_gpu_s" not in m  # no GPU asked
        assert r.data.tags[f"{TAG}.node"]
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["probe.json"]
        probe = json.loads(
            Path(client.download_artifacts(r.info.run_id, "probe.json", str(tmp_path))).read_text()
        )
        assert probe["lr"] in (0.01, 0.001) and len(probe["curve"]) >= 3
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert [m.step for m in history][:2] == [1, 5]

    # the plug-in's report hook gives `sl2o report` its panel, with no change to harness/
    report = subprocess.run(
        [*cli, "report", "plugin-probe", "--tracking-uri", uri, "--workdir", str(tmp_path), "--out", "rep"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Learning-rate probe (probe)" in page and 'src="lr_probe_probe.png"' in page, page
    png = tmp_path / "rep" / "lr_probe_probe.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
