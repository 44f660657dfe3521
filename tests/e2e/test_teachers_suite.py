"""End to end: a meta_train stage through Ray Tune, its teacher ranked beside baselines."""

from __future__ import annotations

import json
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
                # long enough that the interrupt lands mid-run: curve points reach MLflow every 5 s, and 40
                # episodes could end before the check saw episode 10
                "settings": {"episode_length": 60, "episodes": 120, "eval_every": 20, "val_seeds": [900]},
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
    assert finished[0].data.metrics["episodes"] == 120.0
    steps = [m.step for m in client.get_metric_history(finished[0].info.run_id, "meta_loss")]
    assert steps and steps[0] > 1 and steps[-1] == 120, steps[:5]  # continued from a checkpoint, not episode 1

    # the resume is invisible in the results: the teacher's history runs from episode 1, once each, and its
    # validation losses are those of the same stage run without an interruption
    history = _history(client, finished[0].info.run_id, tmp_path / "resumed")
    assert [h["episode"] for h in history["history"]] == list(range(1, 121))
    straight_uri = f"sqlite:///{tmp_path}/straight.db"
    run_suite(
        load_suite_dict({**data, "name": "teach-straight"}),
        RunOptions(tracking_uri=straight_uri, workdir=str(tmp_path / "straight"), log=lambda m: None),
    )
    straight_client = tracking.init_tracking(straight_uri)
    exp = tracking.our_experiments(straight_client, "teach-straight")[0]
    (run,) = tracking.find_runs(straight_client, [exp.experiment_id], "tags.`sl2o.kind` = 'trial'")
    straight = _history(straight_client, run.info.run_id, tmp_path / "straight-hist")

    def val(h: dict) -> list[tuple[int, float]]:
        return [(e["episode"], e["val_loss"]) for e in h["history"] if "val_loss" in e]

    assert val(history) == val(straight) and len(val(history)) == 6, (val(history), val(straight))
    assert history["best_val_loss"] == straight["best_val_loss"]


def _history(client, run_id: str, dst: Path) -> dict:
    dst.mkdir(parents=True, exist_ok=True)
    return json.loads(Path(client.download_artifacts(run_id, "history.json", str(dst))).read_text())


def test_an_interrupted_time_budget_is_spent_once_in_all(
    ray_session, tmp_path: Path, cli_run_command, run_and_interrupt
) -> None:
    """Ctrl-C during a time-budgeted meta-training, rerun: the clock goes on from the checkpoint, so the
    teacher trains for the budget in all (not the budget again after the resume), and its history runs from
    episode 1."""
    import subprocess

    budget = 12.0
    data = {
        "name": "teach-time",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teachers",
                "teachers": [{"name": "rp_small", "kwargs": {"out_scale": 0.1}}],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {
                    "episode_length": 40,
                    "episodes": None,
                    "time_budget_s": budget,
                    "eval_every": 1000,
                    "val_seeds": [900],
                },
                "checkpoint_every": 2,
            }
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    client = tracking.init_tracking(uri)
    cmd = cli_run_command(data, tmp_path, uri, ray_session.get_runtime_context().gcs_address)

    def half_spent() -> bool:
        exps = tracking.our_experiments(client, "teach-time")
        runs = tracking.find_runs(client, [exps[0].experiment_id], "tags.`sl2o.kind` = 'trial'")
        hist = client.get_metric_history(runs[0].info.run_id, "meta_loss")
        return max((m.step for m in hist), default=0) >= 6

    run_and_interrupt(cmd, tmp_path, half_spent, timeout=180)
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    exp = tracking.our_experiments(client, "teach-time")[0]
    runs = tracking.find_runs(client, [exp.experiment_id], "tags.`sl2o.kind` = 'trial'")
    (done,) = [r for r in runs if r.info.status == "FINISHED"]
    history = _history(client, done.info.run_id, tmp_path / "hist")
    episodes = [h["episode"] for h in history["history"]]
    assert episodes == list(range(1, len(episodes) + 1)), episodes
    assert history["stop_reason"] == "time_budget"
    # the training time of both runs together: the budget, plus at most the episode that crossed it (and
    # the time between the last checkpoint and the interrupt, trained again after the resume)
    assert budget <= history["elapsed_s"] < budget + 5, history["elapsed_s"]
    elapsed = [h["elapsed_s"] for h in history["history"]]
    assert elapsed == sorted(elapsed), elapsed  # the clock never went back to 0 at the resume
