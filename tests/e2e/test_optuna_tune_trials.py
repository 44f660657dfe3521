"""End to end: an Optuna meta_tune stage with ``search: tune`` through ``sl2o run``.

Each Optuna trial is its own Ray Tune trial (``OptunaSearch``), at most ``max_concurrent: 2`` at a time; Ctrl-C
mid-search and the same command again resumes the study (``Tuner.restore``) without redoing finished trials;
the stage's output is the selected equation, checked on the validation split, and an evaluate stage reads it
with ``from_stage`` as it reads an in-trial stage's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from harness import tracking
from harness.report.html import build_report
from harness.symbolic.families import sgd_equation

pytestmark = pytest.mark.e2e

N_TRIALS = 6


def _suite(eq_file: Path) -> dict:
    return {
        "name": "optuna-tune-trials",
        "stages": [
            {
                "kind": "meta_tune",
                "name": "tune",
                "equation": str(eq_file),
                # long enough that Ctrl-C lands mid-search
                "optimizee": {"name": "quadratic_cos", "steps": 2500},
                "method": "optuna",
                "search": "tune",
                "max_concurrent": 2,
                "settings": {"n_trials": N_TRIALS, "sampler": "tpe", "eval_seeds": [7], "eval_steps": 100},
            },
            {
                "kind": "evaluate",
                "name": "eval",
                "optimizees": [{"name": "quadratic_cos", "steps": 50}],
                "optimizers": [{"family": "symbolic", "from_stage": "tune", "name": "tuned"}],
                "seeds": [100],
            },
        ],
    }


def _interrupt_after_line(cmd: list[str], cwd: Path, text: str, timeout: float = 240) -> None:
    """Run ``cmd``, send Ctrl-C as soon as a line of its output contains ``text``, wait for it to exit."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        timer.cancel()
    assert any(text in line for line in seen), "".join(seen) + (rest or "")


def _overlap(runs: list) -> int:
    """The most trial runs that were running at one moment (from their start and end times)."""
    events = sorted(
        [(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def test_optuna_trials_as_tune_trials_resume_and_feed_evaluate(
    ray_session, tmp_path: Path, cli_run_command
) -> None:
    eq_file = sgd_equation(0.01).save(tmp_path / "sgd.json")
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = cli_run_command(_suite(eq_file), tmp_path, uri, ray_session.get_runtime_context().gcs_address)
    client = tracking.init_tracking(uri)  # create the DB here so polling never races its migration

    def trials(where: str = "") -> list:
        exps = tracking.our_experiments(client, "optuna-tune-trials")
        return tracking.find_runs(
            client,
            [exps[0].experiment_id],
            f"tags.`sl2o.kind` = 'trial' and tags.`sl2o.stage` = 'tune'{where}",
        )

    # Ctrl-C once the driver says two trials are done (its progress line comes as each trial ends; MLflow
    # may show finished trials in a burst, as the tracker delivers its writes from a queue)
    _interrupt_after_line(cmd, tmp_path, f"[tune] 2/{N_TRIALS} trials done")
    finished = trials(" and attributes.status = 'FINISHED'")  # the interrupted driver delivered its queue
    done_before = {r.data.tags["sl2o.trial_key"]: r.info.run_id for r in finished}
    assert 2 <= len(done_before) < N_TRIALS

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "restoring Tune experiment" in rerun.stdout, rerun.stdout

    client = tracking.init_tracking(uri)
    runs = [r for r in trials() if r.info.status == "FINISHED"]
    index = sorted(int(r.data.metrics["search_index"]) for r in runs)
    assert index == list(range(N_TRIALS)), index  # every Optuna trial once, numbered on after the resume
    assert len({r.data.tags["sl2o.trial_key"] for r in runs}) == N_TRIALS
    for key, rid in done_before.items():  # finished before Ctrl-C: kept, not run again
        assert [r.info.run_id for r in runs if r.data.tags["sl2o.trial_key"] == key] == [rid]
    assert all("search_params" in json.dumps(dict(r.data.tags)) for r in runs)
    assert _overlap(runs) <= 2  # max_concurrent: 2

    # the stage's output: the selected equation, checked on validation; evaluate read it
    exp = tracking.our_experiments(client, "optuna-tune-trials")[0]
    stage = tracking.find_runs(
        client, [exp.experiment_id], "tags.`sl2o.kind` = 'stage' and tags.`sl2o.stage` = 'tune'"
    )[0]
    assert stage.data.tags.get("sl2o.complete") == "true"
    assert {"val_loss_before", "val_loss_after", "kept_tuned", "best_value"} <= set(stage.data.metrics)
    best = min(runs, key=lambda r: (r.data.metrics["objective"], r.data.metrics["search_index"]))
    assert stage.data.metrics["best_value"] == best.data.metrics["objective"]
    names = {a.path for a in client.list_artifacts(stage.info.run_id)}
    assert {"equation.json", "history.json"} <= names
    ev = tracking.find_runs(
        client, [exp.experiment_id], "tags.`sl2o.kind` = 'trial' and tags.`sl2o.stage` = 'eval'"
    )
    assert len(ev) == 1 and ev[0].info.status == "FINISHED"
    assert "tuned" in json.dumps(dict(ev[0].data.tags)) + json.dumps(dict(ev[0].data.params))
    assert "Optuna over 6 Tune trials" in rerun.stdout + rerun.stderr
    # the report's meta-tuning plot reads the search's history from the stage run
    rep = build_report(client, "optuna-tune-trials", tmp_path / "report", log_artifacts=False)
    tuned_plots = [p for p in rep.plots if p.title == "Meta-tuning (tune)"]
    assert tuned_plots and tuned_plots[0].file.stat().st_size > 0, [p.title for p in rep.plots]
    os.environ.pop("RAY_ADDRESS", None)
