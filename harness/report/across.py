"""Scores across tasks: speedup over tuned Adam, time to a target, performance profiles.

A task is an optimizee at one horizon (``suite/mlp · 300 steps``), with its own best Adam, target and curves.
An optimizer's curve on a task is the mean over seeds of its logged minibatch loss, smoothed by a running
mean of :data:`SMOOTH` points so that one lucky batch does not count as reaching a loss. Definitions:
:func:`task_scores` (speedup, after learned_optimization; time to target, after AlgoPerf) and
:func:`profiles` (AlgoPerf's performance profile ``rho(tau)``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: points of the running mean applied to curves before reading off when a loss is reached
SMOOTH = 5
#: the ``tau`` at which profiles are reported
TAUS = (1.0, 1.25, 1.5, 2.0, 4.0)
BASELINE_FAMILIES = ("sgd", "adam")


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the smoothed mean over seeds of curves logged at the same steps (shortest length kept)."""
    n = min((len(c) for c in curves), default=0)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    steps = np.array([s for s, _ in curves[0][:n]], dtype=np.float64)
    values = np.mean([[v for _, v in c[:n]] for c in curves], axis=0)
    k = max(1, min(SMOOTH, n))
    smooth = np.convolve(values, np.ones(k) / k, mode="full")[:n] / np.minimum(np.arange(1, n + 1), k) * k
    return steps, smooth


def first_step_at_or_below(steps: np.ndarray, curve: np.ndarray, level: float) -> float:
    """The first logged step where ``curve <= level`` (inf when never)."""
    hit = np.nonzero(curve <= level)[0]
    return float(steps[hit[0]]) if len(hit) else math.inf


def task_scores(
    rows: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]],
    cost_per_step: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per optimizer row of ONE task (its leaderboard rows and their per-seed curves by optimizer):
    ``speedup_vs_adam``, ``speedup_bound``, ``target``, ``time_to_target``.

    Steps are the unit unless ``cost_per_step`` gives each optimizer's seconds per step on a cost axis
    (:func:`harness.report.at_cost.cost_per_step`, mean over seeds): then every curve's steps are turned into
    the seconds spent by then, so time to target and speedup compare equal cost, and an optimizer without a
    cost is left out.

    * ``speedup_vs_adam``: the steps the task's best Adam needs to reach this optimizer's final loss, over
      the steps this optimizer used (above 1: faster). When Adam never gets there the speedup is at least
      Adam's budget over those steps, reported as that bound (``speedup_bound: true``).
    * ``time_to_target``: the first step where the curve reaches ``target``, the best baseline's (SGD/Adam)
      final loss; ``inf`` when never reached.
    """
    mc = {opt: mean_curve(c) for opt, c in curves.items() if c}
    if cost_per_step is not None:
        mc = {
            opt: (steps * cost_per_step[opt], curve)
            for opt, (steps, curve) in mc.items()
            if math.isfinite(cost_per_step.get(opt, math.nan))
        }
    complete = [
        r
        for r in rows
        if r["diverged"] == 0 and r.get("errored", 0) == 0 and not r.get("stopped") and r["optimizer"] in mc
    ]
    adams = [r for r in complete if r["family"] == "adam"]
    baselines = [r for r in complete if r["family"] in BASELINE_FAMILIES]
    if not complete:
        return []
    target = min(r["mean"] for r in (baselines or complete))
    out = []
    for r in complete:
        steps, curve = mc[r["optimizer"]]
        used = float(steps[-1]) if len(steps) else math.nan
        res = {"optimizer": r["optimizer"], "family": r["family"], "final": r["mean"], "target": target}
        ttt = first_step_at_or_below(steps, curve, target)
        if not math.isfinite(ttt) and r["mean"] <= target:
            ttt = used  # its final loss meets the target: reached by the end (the smoothed curve lags)
        res["time_to_target"] = ttt
        if adams:
            a_steps, a_curve = mc[adams[0]["optimizer"]]
            need = first_step_at_or_below(a_steps, a_curve, r["mean"])
            if not math.isfinite(need) and r["mean"] >= adams[0]["mean"]:
                need = float(a_steps[-1])  # Adam's own final loss is reached at the end of its budget
            bound = not math.isfinite(need)
            res["speedup_vs_adam"] = (float(a_steps[-1]) if bound else need) / used
            res["speedup_bound"] = bound
            res["adam"] = adams[0]["optimizer"]
        out.append(res)
    return out


def profiles(
    times: Mapping[str, Mapping[str, float]], taus: Sequence[float] = TAUS
) -> dict[str, list[float]]:
    """``times[task][optimizer]`` -> ``rho(tau)`` per optimizer over all tasks (missing counts as never):
    the fraction of tasks on which the optimizer's time to target is within ``tau`` times the best one's."""
    optimizers = sorted({o for t in times.values() for o in t})
    tasks = list(times)
    out: dict[str, list[float]] = {}
    for o in optimizers:
        ratios = []
        for task in tasks:
            best = min(times[task].values(), default=math.inf)
            t = times[task].get(o, math.inf)
            ratios.append(t / best if math.isfinite(t) and math.isfinite(best) and best > 0 else math.inf)
        out[o] = [sum(r <= tau for r in ratios) / len(tasks) for tau in taus]
    return out


def across_summary(per_task: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per optimizer over every task: tasks, geometric-mean speedup over Adam, targets reached,
    and the performance profile at :data:`TAUS`, best first."""
    speedups: dict[str, list[float]] = defaultdict(list)
    bounds: dict[str, int] = defaultdict(int)
    reached: dict[str, int] = defaultdict(int)
    times: dict[str, dict[str, float]] = {}
    for task, scores in per_task.items():
        times[task] = {s["optimizer"]: s["time_to_target"] for s in scores}
        for s in scores:
            reached[s["optimizer"]] += math.isfinite(s["time_to_target"])
            if "speedup_vs_adam" in s and math.isfinite(s["speedup_vs_adam"]) and s["speedup_vs_adam"] > 0:
                speedups[s["optimizer"]].append(s["speedup_vs_adam"])
                bounds[s["optimizer"]] += bool(s["speedup_bound"])
    prof = profiles(times)
    rows = []
    for o, rho in prof.items():
        sp = speedups.get(o, [])
        rows.append(
            {
                "optimizer": o,
                "tasks": sum(o in t for t in times.values()),
                "speedup_vs_adam_geomean": float(np.exp(np.mean(np.log(sp)))) if sp else math.nan,
                "speedup_lower_bounds": bounds.get(o, 0),
                "targets_reached": reached.get(o, 0),
                **{f"rho@{tau:g}": v for tau, v in zip(TAUS, rho, strict=True)},
            }
        )
    rows.sort(
        key=lambda r: (
            -r[f"rho@{TAUS[0]:g}"],
            -r["targets_reached"],
            -np.nan_to_num(r["speedup_vs_adam_geomean"]),
        )
    )
    return rows


def from_records(
    records: Sequence[Mapping[str, Any]], cost: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The summary and per-task scores of leaderboard records that carry curves (``curve``); with ``cost`` (a
    cost axis of :data:`harness.report.at_cost.COST_AXES`), times are in seconds on that axis, not steps."""
    from harness.config.specs import task_label
    from harness.report.at_cost import COST_AXES, cost_per_step
    from harness.report.leaderboard import aggregate

    if cost is not None and cost not in COST_AXES:
        raise ValueError(f"unknown cost axis {cost!r}: use one of {', '.join(COST_AXES)}")

    def task(r: Mapping[str, Any]) -> str:
        return f"{r['suite']}/{task_label(r['optimizee'], r.get('horizon') or '')}"

    rows = aggregate([dict(r) for r in records])  # in task order: optimizee, then horizon ascending
    curves: dict[tuple[str, str], list[Any]] = defaultdict(list)
    per_step: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if r.get("curve") and r["status"] == "ok":
            curves[(task(r), r["optimizer"])].append(r["curve"])
            if cost is not None:
                per_step[(task(r), r["optimizer"])].append(cost_per_step(r, cost))
    tasks: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        tasks[task(row)].append(row)
    def scale(name: str, trs: list[Mapping[str, Any]]) -> dict[str, float] | None:
        if cost is None:
            return None
        return {r["optimizer"]: float(np.mean(per_step.get((name, r["optimizer"]), [math.nan]))) for r in trs}

    per_task = {
        name: task_scores(
            trs, {r["optimizer"]: curves.get((name, r["optimizer"]), []) for r in trs}, scale(name, trs)
        )
        for name, trs in tasks.items()
    }
    return across_summary(per_task), per_task
