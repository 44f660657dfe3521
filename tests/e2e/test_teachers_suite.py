"""End to end: a meta_train stage through Ray Tune, its teacher ranked beside baselines."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import report, tracking
from harness.config import load_suite_dict
from harness.runner import RunOptions, run_suite
from teachers.checkpoint import load_teacher

pytestmark = pytest.mark.e2e


def test_meta_train_stage_then_teacher_on_the_leaderboard(ray_session, tmp_path: Path) -> None:
    data = {
        "name": "teach",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teachers",
                "teachers": [{"name": "rp_small", "kwargs": {"out_scale": 0.1}}],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {"episode_length": 40, "episodes": 4, "eval_every": 2, "val_seeds": [900]},
                "checkpoint_every": 2,
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
    uri = f"sqlite:///{tmp_path}/m.db"
    out = run_suite(load_suite_dict(data), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None))
    teach = out.stages["teachers"]
    assert teach.errors == 0 and len(teach.trials) == 1
    trial = teach.trials[0]
    ckpt = trial.artifacts / "teacher.pt"
    teacher = load_teacher(ckpt)  # weights_only load through the registry
    assert teacher.kwargs["out_scale"] == 0.1
    assert (trial.artifacts / "history.json").exists()
    assert trial.metrics["episodes"] == 4.0

    client = tracking.init_tracking(uri)
    hist = client.get_metric_history(trial.run_id, "meta_loss")
    assert [m.step for m in hist] == [1, 2, 3, 4]

    rows = report.aggregate(tracking.leaderboard_records(client, "teach"))
    assert {r["family"] for r in rows} == {"teacher", "adam"}
    t_row = next(r for r in rows if r["family"] == "teacher")
    assert t_row["optimizer"] == "teacher:rp_small-s0" and t_row["n"] == 2
