"""End to end: nothing lost, nothing doubled, nothing hidden.

* a driver SIGKILLed mid-stage, then rerun: every trial is recorded once and the leaderboard counts
  each seed once (``benchmarks/perf/chaos.py`` does this at three kill points);
* a stage with an errored trial is not finished: ``sl2o run`` exits 1 naming the trial, its error and
  its log; after the cause is fixed the same command runs only that trial;
* two drivers of one suite started at once on a fresh store: the store is created once, and the second
  driver waits for the first and reuses its stage instead of training every trial again.
"""

from __future__ import annotations

import importlib.util
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
CLI = [sys.executable, "-m", "harness.cli"]


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "perf" / "chaos.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sigkilled_driver_then_rerun_records_every_trial_once(ray_session, tmp_path: Path) -> None:
    res = _chaos_module().run_chaos(
        2, ray_session.get_runtime_context().gcs_address, tmp_path, log=lambda m: None
    )
    assert res["kills"] == 2, res
    assert res["duplicates"] == 0 and res["missing"] == 0, res
    assert res["trials_unique"] == res["trials_expected"] and res["leaderboard_rows_ok"], res


def test_sigterm_takes_the_ctrl_c_path_and_the_rerun_records_every_trial_once(
    ray_session, tmp_path: Path
) -> None:
    """A driver that started its own Ray (whose SIGTERM handler would kill everything and exit mid-fit)
    exits 130 on SIGTERM with its Tune state signed; the rerun resumes it."""
    suite = {
        "name": "sigterm",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                # trials long enough (about a second each) that SIGTERM lands mid-stage: at 400 steps the ten
                # trials could all finish between the check that a third are recorded and the signal
                "optimizees": [{"name": "quadratic_cos", "steps": 3000}],
                "optimizers": [
                    {"family": "adam", "lr": [0.01, 0.003, 0.001]},
                    {"family": "sgd", "lr": [0.01, 0.001]},
                ],
                "seeds": [0, 1],
            }
        ],
    }
    (tmp_path / "sigterm.yaml").write_text(yaml.safe_dump(suite))
    res = _chaos_module().run_sigterm(
        tmp_path,
        log=lambda m: None,
        suite_file=tmp_path / "sigterm.yaml",
        rerun_address=ray_session.get_runtime_context().gcs_address,  # the resume need not start a Ray
    )
    assert res["sigterm_exit"] == 130, res
    assert res["sigterm_state_signed"], res
    assert res["sigterm_duplicates"] == 0 and res["sigterm_missing"] == 0, res


def test_a_second_driver_of_the_same_stage_waits_and_reuses_instead_of_training_again(
    ray_session, tmp_path: Path
) -> None:
    suite = {
        "name": "twice",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 200}],
                "optimizers": [{"family": "adam", "lr": 0.01}, {"family": "sgd", "lr": 0.01}],
                "seeds": [0, 1, 2],
            }
        ],
    }
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(suite))
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [*CLI, "run", str(path), "--tracking-uri", uri, "--workdir", str(tmp_path), "--no-leaderboard"]
    cmd += ["--address", ray_session.get_runtime_context().gcs_address]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    assert "duplicate column" not in "".join(outs)  # both started at once on a fresh store: created once
    assert sum("[e] finished: 6 trials ok" in o for o in outs) == 1, "\n".join(outs)  # one driver trained
    assert sum("[e] reusing finished stage" in o for o in outs) == 1, "\n".join(outs)
    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name("twice")
    trials = tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial'")
    assert len(trials) == 6  # every trial trained (and recorded) once


def test_errored_trial_fails_the_stage_and_a_rerun_runs_only_it(tmp_path: Path) -> None:
    suite = {
        "name": "errored-then-fixed",
        "stages": [
            {
                "kind": "lr_probe",
                "name": "probe",
                "optimizees": [{"name": "quadratic_cos"}],
                "lrs": [0.01, 0.001, 0.003],
                "steps": 10,
            }
        ],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    uri = f"sqlite:///{tmp_path}/m.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])
    cmd = [*CLI, "run", str(path), "--tracking-uri", uri, "--workdir", str(tmp_path), "--no-leaderboard"]

    bad = subprocess.run(
        cmd,
        cwd=tmp_path,
        env={**env, "SL2O_PROBE_FAIL_LR": "0.001"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "stage 'probe' is not finished: 1 trial(s) errored, 2 ok" in bad.stderr
    assert (
        "quadratic_cos · 0.001: RuntimeError: probe at lr=0.001 fails while SL2O_PROBE_FAIL_LR is set"
        in bad.stderr
    )
    log = bad.stderr.split("log: ")[1].split()[0]
    assert Path(log).is_file() and "SL2O_PROBE_FAIL_LR" in Path(log).read_text()

    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name("errored-then-fixed")
    first = {
        r.data.tags[f"{TAG}.lr"]: r
        for r in tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial'")
    }
    assert {k: r.info.status for k, r in first.items()} == {
        "0.01": "FINISHED",
        "0.003": "FINISHED",
        "0.001": "FAILED",
    }
    (stage_run,) = tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'stage'")
    assert stage_run.info.status == "FAILED" and f"{TAG}.complete" not in stage_run.data.tags

    good = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[probe] restoring Tune experiment" in good.stdout
    assert "[probe] finished: 3 trials ok, 0 errored" in good.stdout
    after = {
        r.data.tags[f"{TAG}.lr"]: r
        for r in tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'trial'")
    }
    assert {k: r.info.status for k, r in after.items()} == dict.fromkeys(
        ("0.01", "0.003", "0.001"), "FINISHED"
    )
    # the trials that had finished were not run or recorded again; the errored one was replaced
    assert after["0.01"].info.run_id == first["0.01"].info.run_id
    assert after["0.003"].info.run_id == first["0.003"].info.run_id
    assert after["0.001"].info.run_id != first["0.001"].info.run_id


def test_a_trial_that_could_never_be_scheduled_is_refused_before_anything_is_created(
    ray_session, tmp_path: Path
) -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine.runner import RunOptions, StageInputError, run_suite

    suite = load_suite_dict(
        {
            "name": "too-big",
            "resources": {"cpus_per_trial": 4096},
            "stages": [
                {
                    "kind": "evaluate",
                    "name": "e",
                    "optimizees": [{"name": "quadratic_cos", "steps": 5}],
                    "optimizers": [{"family": "sgd", "lr": 0.1}],
                }
            ],
        }
    )
    db = tmp_path / "m.db"
    with pytest.raises(StageInputError, match="resources.cpus_per_trial: 4096 CPUs per trial"):
        run_suite(
            suite, RunOptions(tracking_uri=f"sqlite:///{db}", workdir=str(tmp_path), log=lambda m: None)
        )
    assert not db.exists()


def test_relative_equation_paths_reach_the_trials(ray_session, tmp_path: Path) -> None:
    """A suite names its equation file relative to where `sl2o run` starts; trials run elsewhere."""
    from harness.symbolic.families import adam_equation

    adam_equation(lr=0.01).save(tmp_path / "eq.json")
    suite = {
        "name": "relative-eq",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 20}],
                "optimizers": [{"family": "symbolic", "equation": "eq.json", "name": "adam-eq"}],
            }
        ],
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    uri = f"sqlite:///{tmp_path}/m.db"
    address = ray_session.get_runtime_context().gcs_address
    run = subprocess.run(
        [*CLI, "run", "s.yaml", "--tracking-uri", uri, "--workdir", "runs", "--address", address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "symbolic:adam-eq" in run.stdout and "1 trials ok, 0 errored" in run.stdout


def test_a_mistyped_fresh_stage_creates_nothing(ray_session, tmp_path: Path) -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine.runner import RunOptions, StageInputError, run_suite

    suite = load_suite_dict(
        {
            "name": "fresh-typo",
            "stages": [
                {
                    "kind": "evaluate",
                    "name": "e",
                    "optimizees": [{"name": "quadratic_cos", "steps": 5}],
                    "optimizers": [{"family": "sgd", "lr": 0.1}],
                }
            ],
        }
    )
    db = tmp_path / "m.db"
    opts = RunOptions(
        tracking_uri=f"sqlite:///{db}", workdir=str(tmp_path), log=lambda m: None, fresh=frozenset({"typo"})
    )
    with pytest.raises(StageInputError, match="--fresh names no stage of suite 'fresh-typo': typo"):
        run_suite(suite, opts)
    assert not db.exists()
