"""Quality at equal cost (harness.report.at_cost) and across-task times in cost-seconds, on synthetic records."""

from __future__ import annotations

import math

import pytest

from harness.report.across import from_records
from harness.report.at_cost import (
    BELOW_FIRST_LOG,
    NO_COST,
    STOPPED_BEFORE,
    across_at_cost,
    check_budget,
    rank_at_cost,
    seed_at_cost,
)


def _rec(
    opt: str,
    cpu_per_step: float,
    losses: list[float],
    *,
    seed: int = 0,
    status: str = "ok",
    family: str = "sgd",
    optimizee: str = "mlp",
    every: int = 10,
) -> dict:
    """A trial that logged ``losses`` every ``every`` steps and spent ``cpu_per_step`` CPU-s per step; a stopped
    trial ran as many steps as it logged, a finished one 100 steps."""
    curve = [(every * (i + 1), v) for i, v in enumerate(losses)]
    ran = curve[-1][0] if status == "stopped" else 100
    metrics = {"cost_cpu_s": cpu_per_step * ran, "cost_wall_s": 2 * cpu_per_step * ran}
    if status == "stopped":
        metrics["stopped_at_step"] = float(ran)
    else:
        metrics.update(steps=float(ran), final_train_loss=losses[-1])
    return {
        "suite": "s",
        "optimizee": optimizee,
        "horizon": "",
        "optimizer": opt,
        "family": family,
        "seed": str(seed),
        "status": status,
        "metric": "final_train_loss",
        "mode": "min",
        "metrics": metrics,
        "histories": {"train_loss_mean": curve},
        "curve": curve,
    }


def _ten(start: float, step: float) -> list[float]:
    return [start - step * i for i in range(10)]


def test_the_loss_is_read_where_the_budget_ends_each_trial() -> None:
    # 0.1 CPU-s per step: 3.5 s buys 35 steps, the last log point at or before is step 30 (the third value)
    fast = _rec("fast", 0.1, _ten(10, 1))
    assert seed_at_cost(fast, 3.5, "cpu") == (8.0, 0.35, "")
    # the wall axis costs twice as much per step: 3.5 wall-s buys 17.5 steps, step 10
    assert seed_at_cost(fast, 3.5, "wall")[0] == 10.0
    # a budget past the whole run: the final loss, the whole run
    assert seed_at_cost(fast, 1000, "cpu") == (1.0, 1.0, "finished within the budget")
    # a budget below the first log point has no value
    v, _, note = seed_at_cost(fast, 0.5, "cpu")
    assert math.isnan(v) and note == BELOW_FIRST_LOG


def test_a_cheaper_config_wins_at_equal_cost_though_it_loses_at_the_end() -> None:
    # "cheap" takes 0.05 s per step and ends at 2.0; "dear" takes 0.2 s per step and ends at 1.0
    recs = [_rec("cheap", 0.05, _ten(10, 0.9), seed=s) for s in (0, 1)]
    recs += [_rec("dear", 0.2, _ten(10, 1), seed=s) for s in (0, 1)]
    rows = {r["optimizer"]: r for r in rank_at_cost(recs, 5.0, "cpu")}
    # 5 s: cheap reaches its end (100 steps, its final 1.9), dear only step 25 -> its step-20 value 9.0
    assert rows["cheap"]["rank"] == 1 and rows["cheap"]["loss_at_cost"] == pytest.approx(1.9)
    assert rows["dear"]["rank"] == 2 and rows["dear"]["loss_at_cost"] == 9.0
    assert rows["dear"]["run_fraction"] == pytest.approx(0.25) and rows["dear"]["cost_full"] == pytest.approx(20)
    # with budget enough for both, the better final loss wins
    ranked = rank_at_cost(recs, 100.0, "cpu")
    assert [r["optimizer"] for r in ranked] == ["dear", "cheap"]


def test_a_stopped_trial_counts_only_where_it_spent_the_budget() -> None:
    stopped = _rec("hopeless", 0.1, [9.0, 8.5, 8.4], status="stopped")  # stopped at step 30, 3 CPU-s
    done = _rec("good", 0.1, _ten(10, 1))
    # 2 s (20 steps): both trained that far, so the stopped one is ranked on its true loss at that cost
    rows = rank_at_cost([stopped, done], 2.0, "cpu")
    assert [(r["optimizer"], r["rank"]) for r in rows] == [("hopeless", 1), ("good", 2)]
    assert rows[0]["loss_at_cost"] == 8.5
    # 5 s: the stopped trial never got there: unranked, after the ranked rows, with the reason; its partial
    # loss (8.4, better than nothing) is never ranked against the finished one
    rows = rank_at_cost([stopped, done], 5.0, "cpu")
    assert [(r["optimizer"], r["rank"]) for r in rows] == [("good", 1), ("hopeless", None)]
    assert rows[1]["note"] == STOPPED_BEFORE and math.isnan(rows[1]["loss_at_cost"])


def test_one_seed_without_a_value_unranks_the_config_and_diverged_ranks_last() -> None:
    a0 = _rec("a", 0.1, _ten(10, 1), seed=0)
    a1 = _rec("a", 0.1, _ten(10, 1), seed=1)
    a1["metrics"].pop("cost_cpu_s")
    div = _rec("div", 0.1, [5.0], status="diverged")
    ok = _rec("ok", 0.1, _ten(20, 1))
    rows = rank_at_cost([a0, a1, div, ok], 5.0, "cpu")
    assert [(r["optimizer"], r["rank"]) for r in rows] == [("ok", 1), ("div", 2), ("a", None)]
    assert math.isinf(rows[1]["loss_at_cost"])
    assert rows[2]["note"] == NO_COST and rows[2]["n"] == 1 and rows[2]["seeds"] == 2


def test_bad_budgets_and_axes_are_refused() -> None:
    for budget in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive number of seconds"):
            check_budget(budget, "cpu")
    with pytest.raises(ValueError, match="unknown cost axis 'tpu'"):
        rank_at_cost([], 1.0, "tpu")


def test_across_summary_of_ranks_at_equal_cost() -> None:
    recs = [
        _rec("x", 0.05, _ten(10, 0.9), optimizee="t1"),
        _rec("y", 0.2, _ten(10, 1), optimizee="t1"),
        _rec("x", 0.2, _ten(10, 1), optimizee="t2"),
        _rec("y", 0.05, _ten(10, 0.5), optimizee="t2"),
        _rec("z", 0.05, _ten(10, 0.2), optimizee="t2"),
    ]
    summary = {r["optimizer"]: r for r in across_at_cost(rank_at_cost(recs, 5.0, "cpu"))}
    assert summary["x"]["wins"] == 1 and summary["y"]["wins"] == 1
    # t2 at 5 s: y 5.5 (finished), z 8.2 (finished), x 9.0 (step 20 of 100)
    # x: rank 1 of 2 (pct 0) and 3 of 3 (pct 1); y: 2 of 2 (1) and 1 of 3 (0); z: 2 of 3 (0.5)
    assert summary["x"]["mean_rank_pct"] == summary["y"]["mean_rank_pct"] == 0.5
    assert summary["z"]["mean_rank"] == 2 and summary["z"]["tasks"] == 1


def test_across_time_to_target_in_cost_seconds() -> None:
    # same curves, but "dear" pays 4x per step: in steps they tie, in CPU-seconds "cheap" is 4x faster
    recs = [
        _rec("adam", 0.1, _ten(10, 1), family="adam"),
        _rec("cheap", 0.05, _ten(10, 1), family="sgd"),
        _rec("dear", 0.2, _ten(10, 1), family="symbolic"),
    ]
    _, in_steps = from_records(recs)
    _, in_cpu = from_records(recs, cost="cpu")
    steps = {s["optimizer"]: s["time_to_target"] for s in next(iter(in_steps.values()))}
    cpu = {s["optimizer"]: s for s in next(iter(in_cpu.values()))}
    assert steps["cheap"] == steps["dear"] == steps["adam"]
    assert cpu["dear"]["time_to_target"] == pytest.approx(4 * cpu["cheap"]["time_to_target"])
    assert cpu["cheap"]["speedup_vs_adam"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown cost axis"):
        from_records(recs, cost="tpu")
