"""Quality at equal cost: each config's training loss when its trials have spent the same CPU-seconds (or
wall-seconds, or GPU-seconds), ranked per task; and the same across tasks.

The definition (one seed's trial, a budget of ``B`` seconds on a cost axis, see :data:`COST_AXES`):

* its **cost per step** is the trial's recorded cost (``cost_cpu_s``, ``cost_wall_s`` or ``cost_gpu_s``, the
  whole trial: start-up and the final evaluation included) over the steps it ran (``steps``; a trial that early
  stopping ended: ``stopped_at_step``), so cost is taken to accrue evenly over the steps;
* the budget buys ``B / cost_per_step`` steps; the **loss at cost** is the trial's ``train_loss_mean`` (the
  mean of the last window of minibatch losses, the quantity ``final_train_loss`` is at the end) at the last
  log point at or before that step; a trial that finished within the budget counts with its
  ``final_train_loss`` (more budget would not have been spent);
* a diverged trial counts as +inf (last, as on the leaderboard); an errored trial, a trial without a recorded
  cost or curve, and a budget below the trial's first log point give no value.

Honesty about early stopping: a trial that ASHA stopped *after* spending the budget has a true loss at that
cost, the same quantity a finished trial has there, so it is ranked with the others; one stopped *before*
spending the budget never trained that far and has no value (``stopped before the budget``). A config ranks
only when every one of its seeds has a value; the others follow their task's ranked rows, unranked, with the
reason.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from harness.config.specs import task_label
from harness.stages.evaluate.metrics import INTERIM_METRIC
from harness.stages.outputs import STATUS_DIVERGED, STATUS_STOPPED, CostKey, ResultKey

#: the cost axes a budget can be given on, and the per-trial metric each reads
COST_AXES: dict[str, str] = {"cpu": CostKey.CPU, "wall": CostKey.WALL, "gpu": CostKey.GPU}
#: the logged curve the loss at cost is read from (a metric history of each evaluate trial)
CURVE = INTERIM_METRIC
#: the reasons a seed has no loss at cost
NO_COST = "no cost recorded"
NO_CURVE = "no curve"
STOPPED_BEFORE = "stopped before the budget"
BELOW_FIRST_LOG = "budget below the first log point"
ERRORED = "errored"

GROUP = ("suite", "optimizee", "horizon", "optimizer")


def check_budget(budget: float, axis: str) -> None:
    """Refuse a budget that is not a positive number of seconds, or an unknown cost axis."""
    if axis not in COST_AXES:
        raise ValueError(f"unknown cost axis {axis!r}: use one of {', '.join(COST_AXES)}")
    if not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"the cost budget must be a positive number of seconds, got {budget!r}")


def cost_per_step(record: Mapping[str, Any], axis: str) -> float:
    """The trial's recorded cost on ``axis`` over the steps it ran (NaN when either is missing)."""
    metrics = record.get("metrics") or {}
    cost = metrics.get(COST_AXES[axis])
    key = ResultKey.STOPPED_AT if record.get("status") == STATUS_STOPPED else "steps"
    steps = metrics.get(key)
    if cost is None or steps is None or not float(steps) > 0 or not math.isfinite(float(cost)):
        return math.nan
    return float(cost) / float(steps)


def seed_at_cost(record: Mapping[str, Any], budget: float, axis: str) -> tuple[float, float, str]:
    """One trial's ``(loss at cost, fraction of its run the budget reaches, note)``: the loss is NaN where the
    trial has no value at the budget (the note says why), +inf for a diverged trial (module docstring)."""
    status = record.get("status")
    if status == "error":
        return math.nan, math.nan, ERRORED
    if status == STATUS_DIVERGED:
        return math.inf, math.nan, STATUS_DIVERGED
    per_step = cost_per_step(record, axis)
    if not math.isfinite(per_step) or per_step <= 0:
        return math.nan, math.nan, NO_COST
    metrics = record["metrics"]
    ran = float(metrics[ResultKey.STOPPED_AT] if status == STATUS_STOPPED else metrics["steps"])
    reach = budget / per_step
    if reach >= ran:
        if status == STATUS_STOPPED:
            return math.nan, 1.0, STOPPED_BEFORE
        final = metrics.get("final_train_loss")
        if final is not None and math.isfinite(float(final)):
            return float(final), 1.0, "finished within the budget"
    curve = (record.get("histories") or {}).get(CURVE) or []
    if not curve:
        return math.nan, math.nan, NO_CURVE
    points = [v for s, v in curve if s <= reach]
    if not points:
        return math.nan, min(1.0, reach / ran), BELOW_FIRST_LOG
    return float(points[-1]), min(1.0, reach / ran), ""


def rank_at_cost(
    records: Sequence[Mapping[str, Any]], budget: float, axis: str = "cpu"
) -> list[dict[str, Any]]:
    """One row per (suite, optimizee, horizon, optimizer) of leaderboard records that carry the
    :data:`CURVE` history (``histories``): ``loss_at_cost`` (mean over seeds) ± ``std``, ``n`` seeds,
    ``run_fraction`` (the mean fraction of its run the budget reaches), ``cost_full`` (the mean cost of one whole
    trial), ``rank`` per task (None where a seed has no value) and ``note`` (why not, or how it was read).
    Ranked rows come first in each task, best (lowest loss) first; tasks keep the records' order."""
    check_budget(budget, axis)
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(str(r.get(k) or "") for k in GROUP)].append(r)
    rows = []
    for key, recs in groups.items():
        seeds = [seed_at_cost(r, budget, axis) for r in recs]
        values = [v for v, _, _ in seeds]
        missing = sorted({note for v, _, note in seeds if math.isnan(v)})
        valued = [v for v in values if not math.isnan(v)]
        fractions = [f for _, f, _ in seeds if not math.isnan(f)]
        costs = [c for c in (_full_cost(r, axis) for r in recs) if not math.isnan(c)]
        notes = {note for _, _, note in seeds if note}
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        row.update(
            family=recs[0].get("family"),
            axis=axis,
            budget_s=float(budget),
            loss_at_cost=statistics.fmean(valued) if valued else math.nan,
            std=statistics.stdev(valued) if len(valued) > 1 and all(map(math.isfinite, valued)) else 0.0,
            n=len(valued),
            seeds=len(recs),
            run_fraction=statistics.fmean(fractions) if fractions else math.nan,
            cost_full=statistics.fmean(costs) if costs else math.nan,
            ranked=not missing,
            note="; ".join(missing) if missing else "; ".join(sorted(notes)),
        )
        rows.append(row)
    tasks = list(dict.fromkeys(tuple(r[k] for k in GROUP[:3]) for r in rows))
    out = []
    for task in tasks:
        mine = [r for r in rows if tuple(r[k] for k in GROUP[:3]) == task]
        mine.sort(key=lambda r: (not r["ranked"], _sortable(r["loss_at_cost"]), r["optimizer"]))
        for i, r in enumerate(mine):
            r["rank"] = i + 1 if r["ranked"] else None
            del r["ranked"]
        out.extend(mine)
    return out


def _sortable(v: float) -> float:
    return math.inf if math.isnan(v) else v


def _full_cost(record: Mapping[str, Any], axis: str) -> float:
    value = (record.get("metrics") or {}).get(COST_AXES[axis])
    return float(value) if value is not None else math.nan


def across_at_cost(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per optimizer over every task of :func:`rank_at_cost`'s rows: ``tasks``, ``ranked`` (tasks where it has
    a loss at the budget on every seed), ``wins`` (rank 1), ``mean_rank`` (over the tasks where it is ranked)
    and ``mean_rank_pct`` (its rank as a fraction of the ranked rows of each task, 0 = best, 1 = last; so that
    tasks of different sizes weigh the same); best first (most wins, then lowest mean rank percentile)."""
    per_task: dict[tuple[str, ...], int] = defaultdict(int)
    for r in rows:
        if r.get("rank") is not None:
            per_task[tuple(r[k] for k in GROUP[:3])] += 1
    acc: dict[str, dict[str, Any]] = {}
    for r in rows:
        a = acc.setdefault(r["optimizer"], {"optimizer": r["optimizer"], "tasks": 0, "ranked": 0, "wins": 0})
        a["tasks"] += 1
        a.setdefault("_ranks", [])
        a.setdefault("_pcts", [])
        if r.get("rank") is None:
            continue
        n = per_task[tuple(r[k] for k in GROUP[:3])]
        a["ranked"] += 1
        a["wins"] += r["rank"] == 1
        a["_ranks"].append(r["rank"])
        a["_pcts"].append((r["rank"] - 1) / (n - 1) if n > 1 else 0.0)
    out = []
    for a in acc.values():
        ranks, pcts = a.pop("_ranks"), a.pop("_pcts")
        a["mean_rank"] = statistics.fmean(ranks) if ranks else math.nan
        a["mean_rank_pct"] = statistics.fmean(pcts) if pcts else math.nan
        out.append(a)
    out.sort(key=lambda a: (-a["wins"], _sortable(a["mean_rank_pct"]), a["optimizer"]))
    return out


def to_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a table with a ``task`` column (``suite / mlp · 300 steps``), for CSV and Markdown."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    frame.insert(0, "task", [f"{r['suite']} / {task_label(r['optimizee'], r['horizon'])}" for r in rows])
    return frame.drop(columns=["suite", "optimizee", "horizon"])


def to_rich_tables(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Per task: rank, optimizer, loss at the budget (mean ± std), seeds with a value, the fraction of a full
    run the budget reaches, a full trial's cost, and the note."""
    from rich.table import Table

    tables = []
    by: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[tuple(r[k] for k in GROUP[:3])].append(r)
    for (suite, optimizee, horizon), rs in by.items():
        axis, budget = rs[0]["axis"], rs[0]["budget_s"]
        t = Table(
            title=f"{suite} / {task_label(optimizee, horizon)}: {CURVE} at {budget:g} {axis}-seconds per trial "
            "(lower is better; '-': no value on every seed, not ranked)"
        )
        for c in ("#", "optimizer", "loss at cost", "seeds", "of run", f"full {axis} s", "note"):
            t.add_column(
                c, justify="left" if c in ("optimizer", "note") else "right", no_wrap=c == "optimizer"
            )
        for r in rs:
            loss = r["loss_at_cost"]
            cell = (
                "-"
                if math.isnan(loss)
                else "diverged"
                if math.isinf(loss)
                else f"{loss:.4g} ± {r['std']:.2g}"
            )
            frac = r["run_fraction"]
            t.add_row(
                "-" if r["rank"] is None else str(r["rank"]),
                r["optimizer"],
                cell,
                f"{r['n']}/{r['seeds']}",
                "-" if math.isnan(frac) else f"{frac:.0%}",
                "-" if math.isnan(r["cost_full"]) else f"{r['cost_full']:.3g}",
                r["note"],
            )
        tables.append(t)
    return tables
