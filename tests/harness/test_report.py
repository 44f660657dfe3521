"""Leaderboard aggregation: seeds aggregated, ranked by the metric per optimizee and horizon, diverged rows
last."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from harness.report.leaderboard import aggregate, to_csv, to_json, to_rich_tables


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
    titles = [str(t.title) for t in to_rich_tables(rows) if "costs and other metrics" not in str(t.title)]
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


def test_errored_seeds_are_counted_left_out_of_the_mean_and_rank_after_complete_rows() -> None:
    recs = [
        rec("adam", 0, 1.0),
        rec("adam", 1, 1.2),
        rec("sgd", 0, 0.5),  # the best mean, but one seed errored: after every complete row
        rec("sgd", 1, None, "error"),
        rec("lion", 0, None, "error"),  # no seed with a value at all
    ]
    rows = aggregate(recs)
    got = [(r["optimizer"], r["rank"], r["n"], r["errored"], r["diverged"], r["seeds"]) for r in rows]
    assert got == [
        ("adam", 1, 2, 0, 0, ["0", "1"]),
        ("sgd", 2, 1, 1, 0, ["0"]),
        ("lion", 3, 0, 1, 0, []),
    ]
    assert rows[1]["mean"] == 0.5 and rows[1]["std"] == 0.0
    assert math.isinf(rows[2]["mean"]) and rows[2]["std"] == 0.0
    assert [r["verdict"] for r in rows] == ["reference", "n/a", "n/a"]
    assert "test_loss" not in rows[2] and rows[1]["test_loss"] == 1.0  # extras: the seeds that have them


def test_the_reference_is_the_best_complete_adam_else_the_best_complete_row() -> None:
    recs = [rec("adam(lr=1)", 0, 0.1), rec("adam(lr=1)", 1, None, "diverged"), rec("sgd", 0, 0.5)]
    recs += [rec("sgd", 1, 0.6), rec("adam(lr=0.1)", 0, 0.9), rec("adam(lr=0.1)", 1, 1.0)]
    assert {r["reference"] for r in aggregate(recs)} == {"adam(lr=0.1)"}  # the diverged adam is not it
    no_adam = [r for r in recs if r["family"] != "adam" or r["optimizer"] == "adam(lr=1)"]
    assert {r["reference"] for r in aggregate(no_adam)} == {"sgd"}


def test_means_are_exactly_rounded_and_the_csv_text_is_pinned() -> None:
    # a naive float sum cancels the 1.0 here (1e16 + 1 - 1e16 == 0); the exactly rounded mean keeps it
    vals = [1e16, 1.0, -1e16, 3.0]
    (row,) = aggregate([rec("a", i, v) for i, v in enumerate(vals)])
    assert row["mean"] == 1.0 == statistics.fmean(vals) and row["std"] == statistics.stdev(vals)
    rows = aggregate([rec("adam", 0, 1.0), rec("adam", 1, 3.0), rec("sgd", 0, None, "diverged")])
    assert to_csv(rows) == (
        "suite,optimizee,horizon,rank,optimizer,family,metric,mean,std,n,diverged,errored,stopped,reference,diff,"
        "ci_low,ci_high,verdict,test_loss\r\n"
        "s,p1,,1,adam,adam,final_train_loss,2.0,1.4142135623730951,2,0,0,0,adam,0.0,nan,nan,reference,4.0\r\n"
        "s,p1,,2,sgd,sgd,final_train_loss,inf,0.0,1,1,0,0,adam,nan,nan,nan,worse (diverged),\r\n"
    )
    assert list(rows[0]) == [
        "suite", "optimizee", "horizon", "optimizer", "family", "metric", "mode", "mean", "std", "n",
        "diverged", "errored", "stopped", "seeds", "test_loss", "rank", "reference", "diff", "ci_low", "ci_high",
        "verdict",
    ]  # fmt: skip
    assert aggregate([]) == [] and to_csv([]).startswith("suite,optimizee,horizon,rank,")


def test_the_terminal_leaderboard_fits_100_columns_and_never_cuts_a_name() -> None:
    from rich.console import Console

    names = [
        "sgd(cosine,lr=0.001,momentum=0.99,nesterov)",
        "sgd(cosine,lr=0.001,momentum=0.9,nesterov)",
        "adam(cosine,lr=0.01)",
        "symbolic:tune-operon-cos-s0",
    ]
    recs = [rec(n, s, 0.1 * (i + 1) + 0.01 * s) for i, n in enumerate(names) for s in range(3)]
    for r in recs:
        r["metrics"].update(test_acc=0.9, wall_time_s=1.5, step_ratio_vs_adam=1.2, state_bytes_per_param=8.0)
    rows = aggregate(recs)
    for width in (80, 100, 200):
        con = Console(width=width, record=True)
        for t in to_rich_tables(rows, width=width):
            con.print(t)
        text = con.export_text()
        assert "…" not in text, text
        assert all(len(line) <= width for line in text.splitlines())
        for n in names:
            assert n in text  # whole, on one line


def test_markdown_and_wide_keep_every_column_and_every_name() -> None:
    from rich.console import Console

    from harness.report.leaderboard import to_markdown

    names = ["sgd(cosine,lr=0.001,momentum=0.99,nesterov)", "adam(cosine,lr=0.01)"]
    recs = [rec(n, s, 0.1 * (i + 1) + 0.01 * s) for i, n in enumerate(names) for s in range(3)]
    for r in recs:
        r["metrics"].update(test_acc=0.9, state_bytes_per_param=8.0)
    rows = aggregate(recs)
    md = to_markdown(rows).splitlines()
    header = next(line for line in md if line.startswith("|"))
    for col in (
        "#",
        "optimizer",
        "mean ± std",
        "seeds",
        "Δ [95% CI]",
        "verdict",
        "test acc",
        "state B / param",
    ):
        assert f" {col} " in header, header
    assert sum(line.startswith("|") for line in md) == 2 + len(names)  # header, rule, one row per optimizer
    for n in names:
        assert any(f" {n} " in line for line in md)
    (wide,) = to_rich_tables(rows, width=60, wide=True)  # ranking and costs in one table, no legend
    con = Console(width=10_000, record=True)
    con.print(wide)
    text = con.export_text()
    assert "test acc" in text and "…" not in text and all(n in text for n in names)
