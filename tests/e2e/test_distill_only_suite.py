"""End to end: a suite that ends with a distill stage exits 0 and says what it produced, per teacher;
a teacher that cannot learn (meta_lr 0) is flagged in the summary, on MLflow and in distill-summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.stages.outputs import TAG

pytestmark = pytest.mark.e2e


def test_distill_only_suite_summarises_and_flags_a_frozen_teacher(ray_session, tmp_path: Path) -> None:
    suite = {
        "name": "distill-only",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teachers",
                "teachers": [{"name": "rp", "label": "frozen", "kwargs": {"hidden": 4, "out_scale": 0.1}}],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {
                    "episode_length": 20,
                    "unroll": 10,
                    "episodes": 4,
                    "eval_every": 2,
                    "meta_lr": 0.0,
                },
            },
            {
                "kind": "collect",
                "name": "data",
                "source": {"from_stage": "teachers"},
                "optimizees": [{"name": "quadratic_cos"}],
                "lags": 3,
                "n_samples": 300,
                "steps": 40,
            },
            {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
        ],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    uri = f"sqlite:///{tmp_path}/m.db"
    address = ray_session.get_runtime_context().gcs_address
    cli = [sys.executable, "-m", "harness.cli"]
    run = subprocess.run(
        [*cli, "run", str(path), "--tracking-uri", uri, "--workdir", str(tmp_path), "--address", address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "[teachers] meta_train: 1 trials ok, 0 errored" in out
    assert "frozen on quadratic_cos s0: validation loss" in out and "DID NOT LEARN" in out
    assert "[data] collect: 1 trials ok" in out and "frozen-s0: 300 train + 60 held-out samples" in out
    assert "[sr] distill: 1 trials ok" in out and "frozen-s0: update = " in out and "held-out R²" in out
    assert "its teacher did not learn" in out and "no finished evaluate trials" not in run.stderr

    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name("distill-only")
    (mt,) = tracking.find_runs(
        client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial' and tags.`{TAG}.stage_kind` = 'meta_train'"
    )
    assert mt.data.tags[f"{TAG}.learned"] == "false" and mt.data.metrics["learned"] == 0.0

    res = subprocess.run(
        [*cli, "distill-summary", "--tracking-uri", uri, "--suite", "distill-only", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["source"] == "frozen-s0" and row["stage"] == "sr" and row["learned"] is False
    assert {"r2_val", "tpf", "mc", "complexity", "input_dependent_fraction", "equation"} <= set(row)
    csv = subprocess.run(
        [*cli, "distill-summary", "--tracking-uri", uri, "--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("suite,stage,source,equation")
