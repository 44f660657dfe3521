"""benchmarks/perf/cluster_scaling.py: its pure parts (the suite, the parsing, the summary line)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from harness.config.suite import load_suite_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location(
        "cluster_scaling", ROOT / "benchmarks/perf/cluster_scaling.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cluster_scaling"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_suite_has_at_least_the_trials_asked_all_of_one_size(scaling) -> None:
    data = scaling.suite(24, 1000)
    assert scaling.n_trials(data) == 24
    suite = load_suite_dict(data)  # a valid suite
    stage = suite.stages[0]
    assert stage.kind == "evaluate" and {o["steps"] for o in data["stages"][0]["optimizees"]} == {1000}
    assert scaling.n_trials(scaling.suite(30, 10)) >= 30


def test_stage_seconds_and_trials_per_node_are_read_from_the_runs_output(scaling) -> None:
    out = "suite ...\n[eval] 24/24 trials done, 40s elapsed (x)\n[eval] finished: 24 trials ok, 0 errored, 41.5s\n"
    assert scaling.stage_seconds(out) == (24, 0, 41.5)
    with pytest.raises(RuntimeError, match="no '\\[eval\\] finished' line"):
        scaling.stage_seconds("nothing")
    lines = [
        json.dumps({"trial_id": "a", "node_ip": "127.0.0.2"}),
        json.dumps({"trial_id": "a", "node_ip": "127.0.0.2"}),  # a trial's results count once
        json.dumps({"trial_id": "b", "node_ip": "127.0.0.3"}),
        json.dumps({"trial_id": "c", "node_ip": "127.0.0.3"}),
        "",
    ]
    assert scaling.trials_per_node(lines) == {"127.0.0.2": 1, "127.0.0.3": 2}


def test_the_summary_line(scaling) -> None:
    one = {"seconds": 80.0, "per_node": {"127.0.0.2": 24}}
    two = {"seconds": 44.0, "per_node": {"127.0.0.2": 12, "127.0.0.3": 12}}
    res = scaling.summary(24, one, two)
    assert list(res) == ["trials", "nodes_used", "speedup", "seconds_1node", "seconds_2node"]
    assert res["nodes_used"] == 2 and res["speedup"] == pytest.approx(80 / 44, abs=1e-3)
