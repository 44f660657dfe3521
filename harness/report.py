"""Leaderboard tables from trial records: seeds aggregated, ranked by the suite's metric, diverged last,
each row compared per seed with a reference (the task's best Adam) with a bootstrap CI and a verdict.

A task is an optimizee at one horizon (a record's ``horizon``: ``300 steps``, ``5 epochs``, or empty for
the optimizee's default budget): ranks, references and verdicts are per (suite, optimizee, horizon)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from typing import Any

from harness.jsonio import dumps
from harness.specs import horizon_order, task_label
from harness.stats import paired

EXTRA_METRICS = (
    "final_train_loss",
    "test_loss",
    "test_acc",
    "wall_time_s",
    "step_ratio_vs_adam",
    "state_bytes_per_param",
)


def _task(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["suite"], row["optimizee"], row.get("horizon") or "")


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (suite, optimizee, horizon, optimizer): mean/std/n of the metric, ranked per task
    (optimizee and horizon; tasks in order of optimizee, then horizon ascending).

    A seed that diverged counts as +inf (or -inf for a ``max`` metric), so any divergence puts the
    row after every row that never diverged; the count of diverged seeds is in ``diverged``. A seed
    whose trial errored has no value: it is left out of the mean, counted in ``errored``, and the row
    ranks after the complete ones (its mean is over fewer seeds).
    """
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(*_task(r), r["optimizer"])].append(r)
    rows: list[dict[str, Any]] = []
    for (suite, optimizee, horizon, optimizer), rs in groups.items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        worst = math.inf if mode == "min" else -math.inf
        values, diverged, errored = [], 0, 0
        per_seed: dict[str, float] = {}
        for r in rs:
            if r["status"] == "error":
                errored += 1
                continue
            if r["status"] == "diverged" or metric not in r["metrics"]:
                diverged += r["status"] == "diverged"
                values.append(worst)
            else:
                values.append(float(r["metrics"][metric]))
            per_seed[str(r["seed"])] = values[-1]
        finite = [v for v in values if math.isfinite(v)]
        mean = statistics.fmean(values) if values and len(finite) == len(values) else worst
        std = statistics.stdev(finite) if len(finite) > 1 and len(finite) == len(values) else 0.0
        row = {
            "suite": suite,
            "optimizee": optimizee,
            "horizon": horizon,
            "optimizer": optimizer,
            "family": rs[0]["family"],
            "metric": metric,
            "mode": mode,
            "mean": mean,
            "std": std,
            "n": len(values),
            "diverged": diverged,
            "errored": errored,
            "seeds": sorted(str(r["seed"]) for r in rs if r["status"] != "error"),
            "_per_seed": per_seed,
        }
        for m in EXTRA_METRICS:
            vals = [float(r["metrics"][m]) for r in rs if m in r["metrics"]]
            if m != metric and vals:
                row[m] = statistics.fmean(vals)
        rows.append(row)

    def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
        v = row["mean"]
        v = v if row["mode"] == "min" else -v
        incomplete = row["diverged"] > 0 or row["errored"] > 0
        return (
            row["suite"],
            row["optimizee"],
            horizon_order(row["horizon"]),
            incomplete,
            v,
            row["optimizer"],
        )

    rows.sort(key=sort_key)
    rank: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in rows:
        rank[_task(row)] += 1
        row["rank"] = rank[_task(row)]
    _compare_with_reference(rows)
    for row in rows:
        del row["_per_seed"]
    return rows


def _compare_with_reference(rows: list[dict[str, Any]]) -> None:
    """Per task (suite, optimizee, horizon): each row against the best Adam row (else the top row), paired
    by seed."""
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by[_task(row)].append(row)
    for group in by.values():  # rows are in rank order
        complete = [r for r in group if r["diverged"] == 0 and r["errored"] == 0]
        adams = [r for r in complete if r["family"] == "adam"]
        ref = (adams or complete or group)[0]
        for row in group:
            row["reference"] = ref["optimizer"]
            if row is ref:
                row.update(diff=0.0, ci_low=math.nan, ci_high=math.nan, verdict="reference")
                continue
            p = paired(row["_per_seed"], ref["_per_seed"], row["mode"])
            row.update(diff=p.diff, ci_low=p.low, ci_high=p.high, verdict=p.verdict)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "diverged"
        return f"{v:.4g}"
    return str(v)


def to_json(rows: list[dict[str, Any]]) -> str:
    """Rows as strict JSON (a diverged row's infinite mean becomes null)."""
    return dumps(rows)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = [
        "suite",
        "optimizee",
        "horizon",
        "rank",
        "optimizer",
        "family",
        "metric",
        "mean",
        "std",
        "n",
        "diverged",
        "errored",
        "reference",
        "diff",
        "ci_low",
        "ci_high",
        "verdict",
    ]
    cols += [m for m in EXTRA_METRICS if any(m in r for r in rows)]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (";".join(v) if isinstance(v, list) else v) for k, v in r.items()})
    return buf.getvalue()


def _fmt_diff(r: dict[str, Any]) -> str:
    if r.get("verdict") == "reference":
        return "-"
    d, lo, hi = r.get("diff", math.nan), r.get("ci_low", math.nan), r.get("ci_high", math.nan)
    if not math.isfinite(d):
        return "n/a"
    ci = f" [{lo:+.3g}, {hi:+.3g}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{d:+.3g}{ci}"


def to_rich_tables(rows: list[dict[str, Any]]) -> list[Any]:
    """One rich Table per task (suite, optimizee, horizon), titled ``suite / mlp · 300 steps``."""
    from rich.table import Table

    tables = []
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[_task(r)].append(r)
    for (suite, optimizee, horizon), rs in by.items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        extras = [m for m in EXTRA_METRICS if m != metric and any(m in r for r in rs)]
        better = "lower" if mode == "min" else "higher"
        t = Table(title=f"{suite} / {task_label(optimizee, horizon)}  ({metric}, {better} is better)")
        ref = rs[0].get("reference", "")
        cols = ["#", "optimizer", "family", f"{metric} mean", "std", "n", "diverged", "errored"]
        cols += [f"Δ vs {ref} [95% CI]", "verdict", *extras]
        for col in cols:
            t.add_column(col, justify="left" if col in ("optimizer", "family") else "right")
        for r in rs:
            t.add_row(
                str(r["rank"]),
                r["optimizer"],
                r["family"],
                _fmt(r["mean"]),
                _fmt(r["std"]),
                str(r["n"]),
                str(r["diverged"]),
                str(r.get("errored", 0)),
                _fmt_diff(r),
                str(r.get("verdict", "")),
                *[_fmt(r.get(m, "")) for m in extras],
            )
        tables.append(t)
    return tables
