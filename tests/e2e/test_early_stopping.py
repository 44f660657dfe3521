"""End to end: an evaluate grid with ASHA early stopping through Ray Tune and MLflow: some trials stop at a
rung, the stage completes and is reused by a rerun, stopped trials are tagged and listed apart on the
leaderboard, and the stage run holds the budget figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import tracking
from harness.cli import app
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.report.leaderboard import STOPPED_VERDICT
from harness.stages.outputs import STATUS_STOPPED, TAG, ResultKey

pytestmark = pytest.mark.e2e

STEPS = 40
GRACE = 10

#: one trial at a time, in grid order (seeds innermost), so that ASHA's decisions do not depend on timing: the
#: first trial at each rung is never stopped (nothing to compare with: ``pace``, a step size too small to move,
#: sets the bar), Adam(0.01) clears it by far, and the same tiny step size later (``slow``) meets the cutoff that
#: Adam's losses set at the first rung
PACE, GOOD, SLOW = "sgd(lr=1e-07)", "adam(lr=0.01)", "sgd(lr=1e-06)"
SUITE = {
    "name": "asha-e2e",
    "resources": {"cpus_per_trial": 1},
    "stages": [
        {
            "kind": "evaluate",
            "name": "grid",
            "optimizees": [
                {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [16], "batch_size": 64}, "steps": STEPS}
            ],
            "optimizers": [
                {"family": "sgd", "lr": 1e-7, "momentum": 0.0},
                {"family": "adam", "lr": 0.01},
                {"family": "sgd", "lr": 1e-6, "momentum": 0.0},
            ],
            "seeds": [0, 1],
            "log_every": 5,
            "max_concurrent": 1,
            "early_stopping": {"scheduler": "asha", "grace_steps": GRACE, "reduction_factor": 3},
        }
    ],
}
N_TRIALS = 3 * 2


def test_asha_stops_the_worse_trials_and_the_stage_completes(ray_session, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    logs: list[str] = []
    suite = load_suite_dict(SUITE)
    out = run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=logs.append))
    stage = out.stages["grid"]
    assert stage.errors == 0 and len(stage.trials) == N_TRIALS, logs  # every trial has one finished record
    stopped = [t for t in stage.trials if t.tag("status") == STATUS_STOPPED]
    assert stopped, [(t.tag("optimizer"), t.tag("status")) for t in stage.trials]
    for t in stopped:  # stopped at a rung below the horizon, with the interim metric it was judged by
        at = t.metrics[ResultKey.STOPPED_AT]
        assert GRACE <= at < STEPS and "train_loss_mean" in t.metrics and "final_train_loss" not in t.metrics
        assert t.metrics["cost_cpu_s"] > 0 and t.metrics["cost_wall_s"] > 0  # what it spent until stopped
    status = {(t.tag("optimizer"), t.tag("seed")): t.tag("status") for t in stage.trials}
    assert status[(PACE, "0")] == status[(GOOD, "0")] == status[(GOOD, "1")] == "ok", status
    assert status[(SLOW, "0")] == status[(SLOW, "1")] == STATUS_STOPPED, status
    assert any(f"early stopping: {len(stopped)} trials stopped" in line for line in logs), logs

    client = tracking.init_tracking(uri)
    metrics = client.get_run(stage.run_id).data.metrics
    assert metrics["early_stopped"] == len(stopped)
    assert metrics["budget_steps_planned"] == N_TRIALS * STEPS
    saved = sum(STEPS - t.metrics[ResultKey.STOPPED_AT] for t in stopped)
    assert metrics["budget_steps_run"] == N_TRIALS * STEPS - saved
    assert metrics["budget_saved_fraction"] == pytest.approx(saved / (N_TRIALS * STEPS))
    assert client.get_run(stage.run_id).data.tags[f"{TAG}.complete"] == "true"

    # a rerun reuses the finished stage (stopped trials are not trained again)
    logs.clear()
    again = run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=logs.append))
    assert again.stages["grid"].reused and any("reusing finished stage" in line for line in logs)

    # the leaderboard lists configs with stopped seeds after the ranked rows, unranked
    res = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    ranked = [r for r in rows if r["rank"] is not None]
    apart = [r for r in rows if r["rank"] is None]
    assert apart and rows == ranked + apart
    assert {r["optimizer"] for r in apart} == {t.tag("optimizer") for t in stopped}
    assert all(r["verdict"] == STOPPED_VERDICT and r["stopped"] >= 1 for r in apart)
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1)) and ranked[0]["optimizer"] == GOOD
    (slow,) = [r for r in apart if r["optimizer"] == SLOW]
    assert slow["n"] == 2 and slow["stopped"] == 2
    table = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--wide"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "stopped early" in table.stdout and "2 (2 stopped)" in table.stdout

    # at equal cost: a budget no trial reaches the end of ranks every config on its loss so far, the stopped
    # ones included (each spent that much); a budget past the stopped trials' spend leaves them unranked
    small = 0.99 * min(t.metrics["cost_cpu_s"] for t in stage.trials)
    res = CliRunner().invoke(
        app, ["leaderboard", "--tracking-uri", uri, "--at-cost", f"{small:.9f}", "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    early = {r["optimizer"]: r for r in json.loads(res.stdout)}
    assert early[SLOW]["n"] == 2 and early[SLOW]["rank"] is not None, early
    assert all(r["axis"] == "cpu" and r["run_fraction"] < 1 for r in early.values()), early
    big = 10 * max(t.metrics["cost_cpu_s"] for t in stage.trials)
    res = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--at-cost", str(big), "--format", "json"])
    late = json.loads(res.stdout)
    assert res.exit_code == 0 and late[0]["optimizer"] == GOOD and late[0]["rank"] == 1, res.output
    assert [r["rank"] for r in late if r["optimizer"] == SLOW] == [None]
