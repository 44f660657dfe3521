"""End to end: ASHA on a meta_tune stage with ``search: tune`` (Optuna trials as Ray Tune trials): hopeless Optuna
trials stop at a rung, are recorded as stopped (not failed), are told to Optuna as pruned, are never the
search's best, and the stage run records the budget saved."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness import tracking
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.registry import STAGES
from harness.report.html import build_report
from harness.stages.meta_tune.kind import INTERIM_OBJECTIVE
from harness.stages.meta_tune.tune_trials import OBJECTIVE
from harness.stages.outputs import STATUS_STOPPED, TAG, ResultKey
from harness.symbolic.families import sgd_equation

pytestmark = pytest.mark.e2e

STEPS, GRACE, N_TRIALS = 200, 20, 8


def _suite(eq_file: Path) -> dict:
    return {
        "name": "optuna-asha-e2e",
        "resources": {"cpus_per_trial": 1},
        "stages": [
            {
                "kind": "meta_tune",
                "name": "tune",
                "equation": str(eq_file),
                "optimizee": {"name": "quadratic_cos", "steps": STEPS},
                "method": "optuna",
                "search": "tune",
                # one trial at a time: ASHA's decisions and the seeded sampler's proposals do not depend on timing
                "max_concurrent": 1,
                "settings": {"n_trials": N_TRIALS, "sampler": "random", "eval_seeds": [7], "eval_steps": 50},
                "early_stopping": {"scheduler": "asha", "grace_steps": GRACE, "reduction_factor": 3},
            }
        ],
    }


def test_asha_stops_hopeless_optuna_trials(ray_session, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    logs: list[str] = []
    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    suite = load_suite_dict(_suite(eq_file))
    out = run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=logs.append))
    stage = out.stages["tune"]
    assert stage.errors == 0 and len(stage.trials) == N_TRIALS, logs
    stopped = [t for t in stage.trials if t.tag("status") == STATUS_STOPPED]
    done = [t for t in stage.trials if t.tag("status") == "ok"]
    assert stopped and len(stopped) + len(done) == N_TRIALS, [t.tag("status") for t in stage.trials]
    for t in stopped:  # stopped at a rung, judged by the interim objective; no objective, no cost lost
        assert t.metrics[ResultKey.STOPPED_AT] in (GRACE, 3 * GRACE), t.metrics
        assert INTERIM_OBJECTIVE in t.metrics and OBJECTIVE not in t.metrics and t.metrics["cost_cpu_s"] > 0

    # the best is a finished trial's, by its full objective
    client = tracking.init_tracking(uri)
    run = client.get_run(stage.run_id)
    best = min(done, key=lambda t: t.metrics[OBJECTIVE])
    hist = next(stage_files(client, stage.run_id, tmp_path, "history.json"))
    assert hist["details"]["best_run"] == best.run_id and hist["details"]["n_stopped"] == len(stopped)
    assert hist["details"]["n_trials"] == len(done)

    # the budget saved, on the stage run
    m = run.data.metrics
    saved = sum(STEPS - t.metrics[ResultKey.STOPPED_AT] for t in stopped)
    assert m["early_stopped"] == len(stopped) and m["budget_steps_planned"] == N_TRIALS * STEPS
    assert m["budget_saved_fraction"] == pytest.approx(saved / (N_TRIALS * STEPS)) and saved > 0
    assert run.data.tags[f"{TAG}.complete"] == "true"
    lines = STAGES.get("meta_tune").summary_lines(suite.stages[0], stage)
    assert f"({len(stopped)} stopped early by ASHA, never the best)" in lines[0], lines

    # Optuna was told: the searcher Tune saved with the experiment holds the stopped trials as PRUNED
    (state_file,) = list((tmp_path).rglob("searcher-state-*.pkl"))
    with open(state_file, "rb") as fh:
        saved_state = pickle.load(fh)
    study = saved_state["_ot_study"] if isinstance(saved_state, dict) else saved_state._ot_study
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) == len(stopped) and states.count(TrialState.COMPLETE) == len(done)
    assert study.best_value == pytest.approx(best.metrics[OBJECTIVE])

    # the report draws the suite's timeline from the trials' start times, wall times and node tags
    assert all(t.metrics.get("started_at_s", 0) > 0 and t.tag("node") != "?" for t in stage.trials)
    report = build_report(client, "optuna-asha-e2e", tmp_path / "report", log_artifacts=False)
    (timeline,) = [p for p in report.plots if p.title == "Suite timeline"]
    assert timeline.file.stat().st_size > 1000 and f"{N_TRIALS} trial attempts on 1 node" in timeline.caption
    assert "timeline.png" in (tmp_path / "report" / "index.html").read_text()


def stage_files(client, run_id: str, tmp_path: Path, name: str):
    """The stage run's ``name`` artifact, parsed (searched in the run's artifact folders)."""
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    for path in local.rglob(name):
        yield json.loads(path.read_text())
