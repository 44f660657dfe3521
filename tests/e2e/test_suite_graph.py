"""End to end: a suite runs as a graph.

* two independent stages run at once (their trials' MLflow runs overlap in time), a dependent stage starts
  after its input finished, and the suite run's tags and the summary keep suite order;
* a failing stage does not stop an independent one, and its dependents do not start;
* Ctrl-C while two stages run stops both (exit 130, Tune state signed); the rerun resumes both and records
  every trial once.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import tracking
from harness.config.suite import load_suite_dict
from harness.engine import trust
from harness.engine.runner import RunOptions, StageFailed, run_suite
from harness.stages.outputs import TAG, CostKey

pytestmark = pytest.mark.e2e


def _runs(uri: str, suite: str, where: str) -> list[Any]:
    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name(suite)
    return tracking.find_runs(client, [exp.experiment_id], where) if exp else []


def _trials(uri: str, suite: str, stage: str, finished: bool = False) -> list[Any]:
    where = f"tags.`{TAG}.kind` = 'trial' and tags.`{TAG}.stage` = '{stage}'"
    return _runs(uri, suite, where + (" and attributes.status = 'FINISHED'" if finished else ""))


def _stage_run(uri: str, suite: str, stage: str) -> Any:
    (run,) = _runs(uri, suite, f"tags.`{TAG}.kind` = 'stage' and tags.`{TAG}.stage` = '{stage}'")
    return run


def _grid(name: str, steps: int, lrs: list[float], seeds: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "evaluate",
        "name": name,
        "optimizees": [{"name": "quadratic_cos", "steps": steps}],
        "optimizers": [{"family": "adam", "lr": lrs}],
        "seeds": seeds,
        **extra,
    }


def _collect(name: str, optimizee: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "collect",
        "name": name,
        "source": {"rule": "adam"},
        "optimizees": [optimizee],
        "lags": 2,
        "n_samples": 300,
        "steps": 40,
        **extra,
    }


def test_independent_stages_overlap_and_a_dependent_waits_for_its_input(ray_session, tmp_path: Path) -> None:
    suite = load_suite_dict(
        {
            "name": "graph-overlap",
            "stages": [
                # one trial at a time: the grid leaves the other CPU to the chain (max_concurrent)
                _grid("grid", 300, [0.01, 0.003, 0.001, 0.0003], [0, 1], max_concurrent=1),
                _collect("data", {"name": "quadratic_cos"}),
                {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
            ],
        }
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    lines: list[str] = []
    out = run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lines.append))
    assert list(out.stages) == ["grid", "data", "sr"]  # the summary's order: the suite's
    grid = _trials(uri, "graph-overlap", "grid", finished=True)
    (data,) = _trials(uri, "graph-overlap", "data", finished=True)
    (sr,) = _trials(uri, "graph-overlap", "sr", finished=True)
    assert len(grid) == 8
    # a grid trial ran while the data trial ran (MLflow's start and end times of the runs)
    d0, d1 = data.info.start_time, data.info.end_time
    assert any(g.info.start_time < d1 and g.info.end_time > d0 for g in grid), "\n".join(lines)
    # the distill stage's trial started after its input stage ended
    assert sr.info.start_time >= _stage_run(uri, "graph-overlap", "data").info.end_time
    client = tracking.init_tracking(uri)
    tags = client.get_run(out.run_id).data.tags
    assert tags[f"{TAG}.stage_keys"].split(",") == [out.stages[n].key for n in ("grid", "data", "sr")]
    assert tags[f"{TAG}.stage_runs"].split(",") == [out.stages[n].run_id for n in ("grid", "data", "sr")]


def test_a_failing_stage_stops_its_dependents_not_an_independent_stage(ray_session, tmp_path: Path) -> None:
    missing = {"name": "mlp", "kwargs": {"dataset": "mnist", "root": str(tmp_path / "no-data")}}
    suite = load_suite_dict(
        {
            "name": "graph-failure",
            "max_failures": 0,
            "stages": [
                _collect("data", missing),  # its trial fails: the dataset is not there
                {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
                _grid("grid", 100, [0.01, 0.001], [0, 1]),
            ],
        }
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    lines: list[str] = []
    with pytest.raises(StageFailed) as info:
        run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lines.append))
    failed = info.value
    assert failed.outcome.name == "data" and "not available" in failed.failures[0].error
    assert list(failed.outcome.extra["completed_stages"]) == ["grid"]  # the independent stage finished
    assert failed.outcome.extra["not_started"] == ["sr"]
    assert "[sr] not started: it needs stage 'data', which did not finish" in lines
    assert len(_trials(uri, "graph-failure", "grid", finished=True)) == 4
    assert not _runs(uri, "graph-failure", f"tags.`{TAG}.stage` = 'sr'")  # never started
    client = tracking.init_tracking(uri)
    (suite_run,) = _runs(uri, "graph-failure", f"tags.`{TAG}.kind` = 'suite'")
    assert suite_run.info.status == "FAILED"
    keys = client.get_run(suite_run.info.run_id).data.tags[f"{TAG}.stage_keys"].split(",")
    assert keys == [failed.outcome.key, failed.outcome.extra["completed_stages"]["grid"].key]  # suite order


def test_ctrl_c_stops_every_running_stage_and_the_rerun_resumes_them_once(
    ray_session,
    tmp_path: Path,
    cli_run_command: Callable[..., list[str]],
    run_and_interrupt: Callable[..., Any],
) -> None:
    suite = {
        "name": "graph-sigint",
        "stages": [
            _grid("a", 3000, [0.01, 0.003, 0.001], [0, 1], max_concurrent=1),
            _grid("b", 3000, [0.02, 0.005, 0.002], [0, 1], max_concurrent=1),
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = cli_run_command(suite, tmp_path, uri, ray_session.get_runtime_context().gcs_address)

    def both_running() -> bool:  # each stage has recorded a finished trial and has at least 3 more to run
        # (with one left, it could finish in the moment between this check and Ctrl-C taking effect)
        done = [len(_trials(uri, "graph-sigint", s, finished=True)) for s in ("a", "b")]
        return all(0 < n <= 3 for n in done)

    run_and_interrupt(cmd, tmp_path, both_running)
    for stage in ("a", "b"):
        run = _stage_run(uri, "graph-sigint", stage)
        assert run.info.status == "KILLED" and f"{TAG}.complete" not in run.data.tags
        assert trust.is_signed(run.data.tags.get(f"{TAG}.tune_state_digest"))  # Tune saved its state
    (suite_run,) = _runs(uri, "graph-sigint", f"tags.`{TAG}.kind` = 'suite'")
    assert suite_run.info.status == "KILLED"

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "[a] restoring Tune experiment" in rerun.stdout and "[b] restoring Tune experiment" in rerun.stdout
    for stage in ("a", "b"):
        keys = Counter(r.data.tags[f"{TAG}.trial_key"] for r in _trials(uri, "graph-sigint", stage, True))
        assert len(keys) == 6 and set(keys.values()) == {1}, keys  # every trial once


def test_a_long_grid_started_first_does_not_starve_the_chain(ray_session, tmp_path: Path) -> None:
    """Tune reuses a finished trial's process for the stage's next trial, so without a fair share the grid
    (more trials than CPUs, no max_concurrent) would keep every CPU until its last trial and the chain would
    wait for all of it. With the share, the chain's stages (stages downstream: first) get a CPU at once."""
    suite = load_suite_dict(
        {
            "name": "graph-share",
            "stages": [
                # 36 trials: long enough that the chain, stage set-up included, ends well before the grid
                _grid("grid", 3000, [0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001], [0, 1, 2, 3, 4, 5]),
                _collect("data", {"name": "quadratic_cos"}),
                {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
            ],
        }
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    lines: list[str] = []
    run_suite(suite, RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lines.append))
    start = CostKey.START

    def span(run: Any) -> tuple[float, float]:
        m = run.data.metrics
        return m[start], m[start] + m[CostKey.WALL]

    grid = [span(r) for r in _trials(uri, "graph-share", "grid", finished=True)]
    (data,) = [span(r) for r in _trials(uri, "graph-share", "data", finished=True)]
    (sr,) = [span(r) for r in _trials(uri, "graph-share", "sr", finished=True)]
    assert len(grid) == 36
    last_grid_end = max(end for _, end in grid)
    # the chain ran its course while the grid still had trials to run
    assert data[0] < last_grid_end and sr[1] < last_grid_end, "\n".join(lines)
