"""End to end on a real 2-node Ray cluster: a node lost during meta-training loses and doubles nothing.

Two meta_train trials run one per node (1 CPU each); once both have saved a checkpoint, the second
node's raylet is SIGKILLed (by its PID). Tune retries that trial on the head node from its checkpoint;
the suite finishes, MLflow has each trial once, and the leaderboard has every (optimizer, seed) row.

The workdir is a storage URI (``file://``, the same code path as ``s3://``): Tune's state goes through
pyarrow, and the teacher checkpoints reach the evaluate trials as staged storage URIs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.report import leaderboard as report
from harness.stages.outputs import TAG
from harness.testing.local_cluster import LocalCluster

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "harness.cli"]


SUITE = {
    "name": "node-lost",
    "max_failures": 2,
    "resources": {"cpus_per_trial": 1},
    "stages": [
        {
            "kind": "meta_train",
            "name": "teachers",
            "teachers": [{"name": "rp_small", "kwargs": {"out_scale": 0.1}}],
            "optimizees": [{"name": "quadratic_cos"}],
            "seeds": [0, 1],
            "settings": {"episode_length": 40, "episodes": 300, "eval_every": 50, "val_seeds": [900]},
            "checkpoint_every": 10,
        },
        {
            "kind": "evaluate",
            "name": "eval",
            "optimizees": [{"name": "quadratic_cos", "steps": 40}],
            "optimizers": [{"family": "teacher", "from_stage": "teachers"}, {"family": "adam", "lr": 0.01}],
            "seeds": [100, 101],
        },
    ],
}


def _checkpointed_trials(store: Path) -> set[Path]:
    return {p.parent for p in store.glob("tune/node-lost/teachers-*/*/checkpoint_*")}


def test_a_raylet_killed_during_meta_training_loses_and_doubles_nothing(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    uri = f"sqlite:///{tmp_path}/m.db"
    store = tmp_path / "store"
    cmd = [*CLI, "run", str(suite), "--workdir", f"file://{store}", "--tracking-uri", uri, "--no-leaderboard"]
    with LocalCluster(nodes=2, cpus_per_node=1) as c:
        env = c.env(SL2O_CACHE_DIR=str(tmp_path / "cache"))
        proc = subprocess.Popen(
            [*cmd, "--address", c.address], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None and len(_checkpointed_trials(store)) < 2:
                time.sleep(0.5)
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            assert len(_checkpointed_trials(store)) == 2, "the two trials never both checkpointed"
            client = tracking.init_tracking(uri)
            c.kill_raylet(1)  # the worker node's raylet, while its trial is mid-training
            exp = client.get_experiment_by_name("node-lost")
            assert exp is not None
            finished_at_kill = tracking.find_runs(
                client, [exp.experiment_id],
                f"tags.`{TAG}.kind` = 'trial' and tags.`{TAG}.stage` = 'teachers' and attributes.status = 'FINISHED'",
            )  # fmt: skip
            assert len(finished_at_kill) < 2, "a trial finished before the node was lost: lengthen it"
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, output[-5000:]
    assert "2 node(s) can read and write the workdir" in output

    trials = tracking.find_runs(
        client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial' and attributes.status = 'FINISHED'"
    )
    by_stage: dict[str, list[str]] = {}
    for r in trials:
        by_stage.setdefault(r.data.tags[f"{TAG}.stage"], []).append(r.data.tags[f"{TAG}.trial_key"])
    assert sorted(len(v) for v in by_stage.values()) == [2, 6], by_stage  # teachers: 2, eval: 2x2 + 2
    assert all(len(set(v)) == len(v) for v in by_stage.values()), "a trial was recorded twice"
    rows = report.aggregate(tracking.leaderboard_records(client, "node-lost"))
    assert sum(int(r["n"]) for r in rows) == 6 and {r["family"] for r in rows} == {"teacher", "adam"}
    # the evaluate trials read the teachers through the storage URI, not a driver-local path
    assert list(store.glob("sl2o-inputs/*/teacher.pt")), sorted(p.name for p in store.iterdir())
