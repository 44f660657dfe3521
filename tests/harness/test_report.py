"""Leaderboard aggregation: seeds aggregated, ranked by the metric, diverged rows last."""

from __future__ import annotations

import json
import math

from harness.report import aggregate, to_csv, to_json


def rec(opt: str, seed: int, value: float | None, status: str = "ok", mode: str = "min") -> dict:
    metrics = {} if value is None else {"final_train_loss": value, "test_loss": value * 2}
    return {
        "suite": "s",
        "stage": "e",
        "optimizee": "p1",
        "optimizer": opt,
        "family": opt.split("(")[0],
        "seed": seed,
        "status": status,
        "metric": "final_train_loss",
        "mode": mode,
        "metrics": metrics,
        "run_id": f"{opt}{seed}",
    }


def test_aggregates_seeds_and_ranks() -> None:
    rows = aggregate([rec("adam(lr=0.01)", 0, 1.0), rec("adam(lr=0.01)", 1, 3.0), rec("sgd(lr=0.1)", 0, 0.5)])
    assert [r["optimizer"] for r in rows] == ["sgd(lr=0.1)", "adam(lr=0.01)"]
    adam = rows[1]
    assert adam["n"] == 2 and adam["mean"] == 2.0 and math.isclose(adam["std"], math.sqrt(2))
    assert adam["test_loss"] == 4.0 and adam["rank"] == 2


def test_diverged_rows_rank_last_even_for_max_metrics() -> None:
    recs = [rec("sgd(lr=1)", 0, None, "diverged"), rec("sgd(lr=1)", 1, 0.1), rec("adam", 0, 5.0)]
    rows = aggregate(recs)
    assert rows[-1]["optimizer"] == "sgd(lr=1)" and rows[-1]["diverged"] == 1
    assert math.isinf(rows[-1]["mean"])
    recs_max = [
        rec("a", 0, 0.9, mode="max"),
        rec("b", 0, 0.95, mode="max"),
        rec("c", 0, None, "diverged", "max"),
    ]
    assert [r["optimizer"] for r in aggregate(recs_max)] == ["b", "a", "c"]


def test_formats() -> None:
    rows = aggregate([rec("a", 0, 1.0), rec("b", 0, None, "diverged")])
    data = json.loads(to_json(rows))
    assert data[1]["mean"] is None and data[1]["diverged"] == 1
    assert to_csv(rows).splitlines()[0].startswith("suite,optimizee,rank,optimizer")
