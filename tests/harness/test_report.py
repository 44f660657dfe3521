"""Leaderboard aggregation: seeds aggregated, ranked by the metric per optimizee and horizon, diverged rows
last."""

from __future__ import annotations

import json
import math

import pytest

from harness.report import aggregate, to_csv, to_json, to_rich_tables


def rec(
    opt: str, seed: int, value: float | None, status: str = "ok", mode: str = "min", horizon: str = ""
) -> dict:
    metrics = {} if value is None else {"final_train_loss": value, "test_loss": value * 2}
    return {
        "suite": "s",
        "stage": "e",
        "optimizee": "p1",
        "horizon": horizon,
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
    assert to_csv(rows).splitlines()[0].startswith("suite,optimizee,horizon,rank,optimizer")


def test_each_horizon_is_its_own_ranking_with_its_own_reference() -> None:
    # at 300 steps sgd beats adam on both seeds; at 1500 adam wins: two tasks, two rankings, two verdicts
    recs = [
        rec("adam", 0, 2.0, horizon="300 steps"),
        rec("adam", 1, 2.1, horizon="300 steps"),
        rec("sgd", 0, 1.0, horizon="300 steps"),
        rec("sgd", 1, 1.1, horizon="300 steps"),
        rec("adam", 0, 0.1, horizon="1500 steps"),
        rec("adam", 1, 0.2, horizon="1500 steps"),
        rec("sgd", 0, 0.5, horizon="1500 steps"),
        rec("sgd", 1, 0.6, horizon="1500 steps"),
    ]
    rows = aggregate(list(reversed(recs)))  # record order does not matter: 300 steps before 1500 steps
    got = [(r["horizon"], r["rank"], r["optimizer"], r["n"], r["verdict"]) for r in rows]
    assert got == [
        ("300 steps", 1, "sgd", 2, "better"),
        ("300 steps", 2, "adam", 2, "reference"),
        ("1500 steps", 1, "adam", 2, "reference"),
        ("1500 steps", 2, "sgd", 2, "worse"),
    ]
    assert rows[0]["mean"] == pytest.approx(1.05) and rows[2]["mean"] == pytest.approx(0.15)
    titles = [str(t.title) for t in to_rich_tables(rows)]
    assert [t.split("  (")[0] for t in titles] == ["s / p1 · 300 steps", "s / p1 · 1500 steps"]
    assert [line.split(",")[2] for line in to_csv(rows).splitlines()[1:]] == ["300 steps"] * 2 + [
        "1500 steps"
    ] * 2


def test_horizons_sort_by_unit_then_size_and_the_default_budget_has_no_label() -> None:
    horizons = ["10 epochs", "2 epochs", "1500 steps", "", "300 steps", "0.5 epochs"]
    rows = aggregate([rec("adam", 0, 1.0, horizon=h) for h in horizons])
    assert [r["horizon"] for r in rows] == [
        "",
        "300 steps",
        "1500 steps",
        "0.5 epochs",
        "2 epochs",
        "10 epochs",
    ]
    assert all(r["rank"] == 1 for r in rows)
    assert str(to_rich_tables(rows)[0].title).startswith("s / p1  (")
    old = rec("adam", 0, 1.0)
    del old["horizon"]  # a record without the field (an older caller) is the default budget
    assert aggregate([old])[0]["horizon"] == ""
