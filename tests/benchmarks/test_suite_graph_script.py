"""benchmarks/perf/suite_graph.py on a tiny suite: the summary line's structure (not its speed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "name": "graph-bench-tiny",
    "stages": [
        {
            "kind": "evaluate",
            "name": "grid",
            "optimizees": [{"name": "quadratic_cos", "steps": 50}],
            "optimizers": [{"family": "adam", "lr": [0.01, 0.001]}],
        },
        {
            "kind": "collect",
            "name": "data",
            "source": {"rule": "adam"},
            "optimizees": [{"name": "quadratic_cos"}],
            "lags": 2,
            "n_samples": 200,
            "steps": 30,
        },
        {"kind": "distill", "name": "sr", "from_stage": "data", "backends": ["linear"]},
    ],
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("suite_graph", ROOT / "benchmarks/perf/suite_graph.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["suite_graph"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.e2e
def test_the_script_runs_a_suite_both_ways_and_prints_the_summary_line(
    bench, ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(yaml.safe_dump(TINY))
    argv = [
        "suite_graph.py",
        "--suite",
        str(suite_file),
        "--workdir",
        str(tmp_path),
        "--quiet",
        "--no-warmup",
        "--json",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = ["seconds_sequential", "seconds_graph", "speedup", "critical_path_s", "utilisation_graph"]
    assert list(res)[:6] == [*keys, "leaderboards_equal"]
    assert res["leaderboards_equal"] is True
    assert res["seconds_sequential"] > 0 and res["seconds_graph"] > 0 and res["speedup"] > 0
    assert set(res["stages_graph"]) == set(res["stages_sequential"]) == {"grid", "data", "sr"}
    # the critical path is the longer of grid and data -> sr in the graph run (the stages' own times, which
    # the runner measures around each stage: close to their MLflow runs'), which it cannot outlast
    stages = res["stages_graph"]
    assert res["critical_path_s"] == pytest.approx(
        max(stages["grid"], stages["data"] + stages["sr"]), abs=1.0
    )
    assert res["critical_path_s"] <= res["seconds_graph"]
    assert 0 < res["utilisation_graph"] <= 1.0 and 0 < res["utilisation_sequential"] <= 1.0


def test_the_summary_compares_leaderboards_by_rows_and_seeds(bench) -> None:
    board = [("s", "p1", "50 steps", "adam", 2)]
    usage = {"critical_path_s": 4.5, "utilisation": 0.8}
    seq = {"wall": 10.0, "stages": {"grid": 4.0}, "usage": {**usage, "utilisation": 0.4}, "leaderboard": board}
    graph = {**seq, "wall": 5.0, "usage": usage}
    res = bench.summary(seq, graph)
    assert res["speedup"] == 2.0 and res["critical_path_s"] == 4.5  # as the graph run recorded it
    assert res["utilisation_graph"] == 0.8 and res["utilisation_sequential"] == 0.4
    assert res["leaderboards_equal"] is True
    other = {**graph, "leaderboard": [("s", "p1", "50 steps", "adam", 1)]}  # a seed missing
    assert bench.summary(seq, other)["leaderboards_equal"] is False
