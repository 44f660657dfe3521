"""A suite as a graph: which stages wait for which, the waves, what --fresh covers, the critical path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config.graph import StageGraph
from harness.config.suite import SuiteError, load_suite, load_suite_dict

SUITES = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


@pytest.fixture(scope="module")
def table4() -> StageGraph:
    return StageGraph.of(load_suite(SUITES / "table4-cpu.yaml"))


def test_each_stage_waits_for_the_stages_it_reads(table4: StageGraph) -> None:
    assert table4.needs["grid"] == () and table4.needs["teacher"] == ()
    assert table4.needs["data"] == ("teacher",)
    assert table4.needs["eq6"] == ("data",) and table4.needs["operon"] == ("data",)
    assert table4.needs["tune-eq6-then-cos"] == ("tune-eq6",)
    # each input once, in suite order, however often the stage names it
    assert table4.needs["rules"] == (
        "teacher",
        "eq6",
        "operon",
        "tune-eq6",
        "tune-operon",
        "tune-eq6-cos",
        "tune-operon-cos",
        "tune-eq6-then-cos",
        "tune-operon-then-cos",
    )


def test_waves_group_the_stages_that_can_run_together(table4: StageGraph) -> None:
    assert table4.waves() == [
        ["grid", "teacher"],
        ["data"],
        ["eq6", "operon"],
        ["tune-eq6", "tune-operon", "tune-eq6-cos", "tune-operon-cos", "own-task"],
        ["tune-eq6-then-cos", "tune-operon-then-cos"],
        ["rules"],
    ]
    lines = table4.describe()
    assert "  grid                  starts at once" in lines
    assert "  data                  waits for teacher" in lines
    assert lines[-6:][0] == "  wave 1: grid, teacher"


def test_ready_starts_a_stage_once_all_its_inputs_are_done(table4: StageGraph) -> None:
    assert table4.ready(done=[], started=[]) == ["grid", "teacher"]
    assert table4.ready(done=["teacher"], started=["grid", "teacher"]) == ["data"]
    started = ["grid", "teacher", "data", "eq6", "operon"]
    assert table4.ready(done=["teacher", "data", "eq6"], started=started) == ["tune-eq6", "tune-eq6-cos"]
    # own-task needs teacher, eq6 and operon
    assert "own-task" in table4.ready(done=["teacher", "data", "eq6", "operon"], started=started)


def test_fresh_covers_every_stage_downstream(table4: StageGraph) -> None:
    assert table4.downstream(["grid"]) == {"grid"}
    assert table4.downstream(["tune-eq6"]) == {"tune-eq6", "tune-eq6-then-cos", "rules"}
    assert table4.downstream(["data"]) == set(table4.order) - {"grid", "teacher"}
    assert table4.downstream([]) == set()


def test_critical_path_is_the_longest_chain_of_durations(table4: StageGraph) -> None:
    seconds = dict.fromkeys(table4.order, 1.0) | {"grid": 100.0, "teacher": 10.0, "tune-operon": 50.0}
    total, chain = table4.critical_path(seconds)
    assert chain == ["grid"] and total == 100.0
    seconds["grid"] = 1.0
    total, chain = table4.critical_path(seconds)
    assert chain == ["teacher", "data", "operon", "tune-operon", "tune-operon-then-cos", "rules"]
    assert total == 10 + 1 + 1 + 50 + 1 + 1


def _suite(stages: list[dict]) -> dict:
    return {"name": "g", "stages": stages}


COLLECT = {"kind": "collect", "source": {"rule": "adam"}, "optimizees": [{"name": "quadratic_cos"}]}


def test_a_cycle_cannot_be_written_and_unknown_references_are_refused() -> None:
    # a stage can only read an earlier one, so the graph has no cycle; a later or unknown one is refused
    with pytest.raises(SuiteError, match="uses from_stage 'd2', which is not an earlier stage"):
        load_suite_dict(
            _suite(
                [
                    {"kind": "distill", "name": "d1", "from_stage": "d2", "backends": ["linear"]},
                    {**COLLECT, "name": "d2"},
                ]
            )
        )
    with pytest.raises(SuiteError, match="uses from_stage 'nope', which is not an earlier stage"):
        load_suite_dict(
            _suite([{"kind": "distill", "name": "d", "from_stage": "nope", "backends": ["linear"]}])
        )
    with pytest.raises(SuiteError, match="uses from_stage 'self', which is not an earlier stage"):
        load_suite_dict(
            _suite([{"kind": "distill", "name": "self", "from_stage": "self", "backends": ["linear"]}])
        )


def test_a_graph_of_an_unvalidated_suite_refuses_a_later_reference() -> None:
    suite = load_suite_dict(
        _suite(
            [
                {**COLLECT, "name": "c"},
                {"kind": "distill", "name": "d", "from_stage": "c", "backends": ["linear"]},
            ]
        )
    )
    swapped = suite.model_copy(update={"stages": list(reversed(suite.stages))})
    with pytest.raises(ValueError, match="stage 'd' reads c, not an earlier stage"):
        StageGraph.of(swapped)


def test_validate_prints_the_graph() -> None:
    res = CliRunner().invoke(app, ["validate", str(SUITES / "table4-cpu.yaml")])
    assert res.exit_code == 0, res.stdout
    assert "stage graph" in res.stdout
    assert "wave 1: grid, teacher" in res.stdout and "wave 2: data" in res.stdout
    assert "tune-eq6-then-cos     waits for tune-eq6" in res.stdout


def test_run_help_says_fresh_covers_downstream_and_offers_sequential() -> None:
    res = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.stdout.split())
    assert "every stage downstream of it" in text and "--sequential" in text


def test_suite_usage_counts_the_stages_this_run_ran() -> None:
    """The critical path over the stages run now (a reused stage took no time), allocated CPU-seconds from each
    trial's recorded wall time x the CPUs it asked for, over the cluster's CPU-seconds."""
    from harness.config.suite import load_suite_dict
    from harness.engine.usage import suite_usage
    from harness.stages.outputs import StageOutcome, TrialOutput

    suite = load_suite_dict(
        {
            "name": "usage",
            "resources": {"cpus_per_trial": 2},
            "stages": [
                {
                    "kind": "evaluate",
                    "name": "grid",
                    "optimizees": [{"name": "quadratic_cos", "steps": 5}],
                    "optimizers": [{"family": "sgd", "lr": 0.1}],
                },
                {
                    "kind": "collect",
                    "name": "data",
                    "source": {"rule": "adam"},
                    "optimizees": [{"name": "quadratic_cos"}],
                    "lags": 1,
                    "n_samples": 100,
                    "steps": 10,
                },
                {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
            ],
        }
    )

    def trial(wall: float, cpu: float) -> TrialOutput:
        return TrialOutput("r", {}, {}, {"cost_wall_s": wall, "cost_cpu_s": cpu}, None)

    outcomes = {
        "grid": StageOutcome(
            "grid", "evaluate", "k1", "r1", False, [trial(3.0, 2.5), trial(3.0, 2.0)], seconds=7.0
        ),
        "data": StageOutcome("data", "collect", "k2", "r2", True, [trial(100.0, 90.0)], seconds=0.0),
        "sr": StageOutcome("sr", "distill", "k3", "r3", False, [trial(2.0, 1.5)], seconds=4.0),
    }
    usage = suite_usage(suite, outcomes, cluster_cpus=4.0, wall_s=10.0)
    assert usage["critical_path_s"] == 7.0  # grid; data was reused (0 s), so data -> sr is 4 s
    assert usage["cpu_allocated_s"] == (3.0 + 3.0 + 2.0) * 2  # the reused stage's trials are not counted
    assert usage["cpu_used_s"] == 2.5 + 2.0 + 1.5
    assert usage["utilisation"] == 16.0 / 40.0
