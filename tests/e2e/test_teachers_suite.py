"""End to end: a meta_train stage through Ray Tune, its teacher ranked beside baselines."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import tracking
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.report import leaderboard as report
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
                "optimizers": [
                    {"family": "teacher", "from_stage": "teachers"},
                    {"family": "adam", "lr": 0.01},
                ],
                "seeds": [100, 101],
            },
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    out = run_suite(
        load_suite_dict(data), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None)
    )
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


def test_interrupted_meta_training_resumes_from_its_tune_checkpoint(
    ray_session, tmp_path: Path, cli_run_command, run_and_interrupt
) -> None:
    """Ctrl-C during meta-training, rerun: the trial continues from its last checkpoint, not episode 1."""
    import subprocess

    data = {
        "name": "teach-resume",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teachers",
                "teachers": [{"name": "rp_small", "kwargs": {"out_scale": 0.1}}],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {"episode_length": 60, "episodes": 40, "eval_every": 20, "val_seeds": [900]},
                "checkpoint_every": 5,
            }
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    client = tracking.init_tracking(uri)
    cmd = cli_run_command(data, tmp_path, uri, ray_session.get_runtime_context().gcs_address)

    def ten_episodes() -> bool:
        exps = tracking.our_experiments(client, "teach-resume")
        runs = tracking.find_runs(client, [exps[0].experiment_id], "tags.`sl2o.kind` = 'trial'")
        hist = client.get_metric_history(runs[0].info.run_id, "meta_loss")
        return max((m.step for m in hist), default=0) >= 10

    run_and_interrupt(cmd, tmp_path, ten_episodes, timeout=180)

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    exp = tracking.our_experiments(client, "teach-resume")[0]
    runs = tracking.find_runs(client, [exp.experiment_id], "tags.`sl2o.kind` = 'trial'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1, (
        [(r.info.status, r.data.tags.get("sl2o.error", "")[-800:]) for r in runs],
        rerun.stdout,
    )
    assert finished[0].data.metrics["episodes"] == 40.0
    steps = [m.step for m in client.get_metric_history(finished[0].info.run_id, "meta_loss")]
    assert steps and steps[0] > 1 and steps[-1] == 40, steps[:5]  # continued from a checkpoint, not episode 1
