"""Across-task scores: speedup over tuned Adam, time to target, performance profiles."""

from __future__ import annotations

import math

import pytest

from harness.report.across import (
    across_summary,
    first_step_at_or_below,
    from_records,
    mean_curve,
    profiles,
    task_scores,
)


def _curve(values: list[float]) -> list[tuple[int, float]]:
    return [(10 * (i + 1), v) for i, v in enumerate(values)]


def _row(opt: str, family: str, final: float, diverged: int = 0) -> dict:
    return {"optimizer": opt, "family": family, "mean": final, "diverged": diverged, "errored": 0}


def test_mean_curve_smooths_and_first_step() -> None:
    steps, c = mean_curve([_curve([4, 3, 2, 1]), _curve([6, 5, 4, 3])])
    assert list(steps) == [10, 20, 30, 40]
    assert c[0] == pytest.approx(5.0) and c[1] == pytest.approx(4.5)  # running mean of 5, 4
    assert first_step_at_or_below(steps, c, 4.0) == 30 and math.isinf(first_step_at_or_below(steps, c, 0.0))


def test_speedup_over_adam_and_time_to_target() -> None:
    adam = [_curve([10 - i for i in range(10)])]  # reaches 1 at step 100
    fast = [_curve([max(1.0, 10 - 3 * i) for i in range(10)])]  # reaches its final 1.0 early
    slow = [_curve([10 - 0.5 * i for i in range(10)])]  # ends at 5.5
    rows = [_row("adam", "adam", 1.0), _row("fast", "symbolic", 1.0), _row("slow", "sgd", 5.5)]
    scores = {s["optimizer"]: s for s in task_scores(rows, {"adam": adam, "fast": fast, "slow": slow})}
    assert scores["adam"]["speedup_vs_adam"] == pytest.approx(1.0) and not scores["adam"]["speedup_bound"]
    # Adam's smoothed (running mean of 5) curve reaches slow's final 5.5 at step 80, of 100 steps used
    assert scores["slow"]["speedup_vs_adam"] == pytest.approx(0.8) and not scores["slow"]["speedup_bound"]
    assert scores["fast"]["target"] == 1.0  # the best baseline's final loss
    assert scores["fast"]["time_to_target"] < scores["adam"]["time_to_target"] == 100
    assert math.isinf(scores["slow"]["time_to_target"])


def test_profiles_and_summary() -> None:
    times = {"t1": {"a": 10.0, "b": 20.0}, "t2": {"a": 40.0, "b": 20.0}, "t3": {"a": 10.0, "b": math.inf}}
    prof = profiles(times, taus=(1.0, 2.0))
    assert prof["a"] == [2 / 3, 1.0] and prof["b"] == [1 / 3, 2 / 3]
    per_task = {
        t: [
            {
                "optimizer": o,
                "time_to_target": v,
                "speedup_vs_adam": 2.0 if o == "a" else 0.5,
                "speedup_bound": False,
            }
            for o, v in ts.items()
        ]
        for t, ts in times.items()
    }
    (first, second) = across_summary(per_task)
    assert first["optimizer"] == "a" and first["speedup_vs_adam_geomean"] == pytest.approx(2.0)
    assert first["targets_reached"] == 3 and second["targets_reached"] == 2


def test_each_horizon_is_a_task_with_its_own_target_and_adam() -> None:
    def rec(opt: str, horizon: str, values: list[float]) -> dict:
        return {
            "suite": "s",
            "optimizee": "mlp",
            "horizon": horizon,
            "optimizer": opt,
            "family": opt,
            "seed": 0,
            "status": "ok",
            "metric": "final_train_loss",
            "mode": "min",
            "metrics": {"final_train_loss": values[-1]},
            "curve": _curve(values),
        }

    records = [
        rec("adam", "300 steps", [5, 4, 3]),
        rec("sgd", "300 steps", [5, 3, 2]),
        rec("adam", "1500 steps", [5, 1, 0.5, 0.3] + [0.25] * 6),
        rec("sgd", "1500 steps", [5, 4, 3, 2, 1.5, 1.2, 1.1, 1.0, 1.0, 1.0]),
    ]
    summary, per_task = from_records(records)
    assert list(per_task) == ["s/mlp · 300 steps", "s/mlp · 1500 steps"]
    short = {s["optimizer"]: s for s in per_task["s/mlp · 300 steps"]}
    long = {s["optimizer"]: s for s in per_task["s/mlp · 1500 steps"]}
    assert short["sgd"]["target"] == 2 and long["adam"]["target"] == 0.25  # each task's best baseline
    assert short["adam"]["adam"] == long["adam"]["adam"] == "adam"
    # sgd is slower than the long run's Adam, and beats the short run's Adam, which never reaches its loss
    assert long["sgd"]["speedup_vs_adam"] < 1 and not long["sgd"]["speedup_bound"]
    assert short["sgd"]["speedup_bound"] and short["sgd"]["time_to_target"] < short["adam"]["time_to_target"]
    assert {r["optimizer"]: r["tasks"] for r in summary} == {"adam": 2, "sgd": 2}
