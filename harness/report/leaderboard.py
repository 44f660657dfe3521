"""Leaderboard tables from trial records: seeds aggregated, ranked by the suite's metric, diverged last,
each row compared per seed with a reference (the task's best Adam) with a bootstrap CI and a verdict. A
config with a seed that early stopping ended (``stopped``) is never ranked: it follows its task's ranked rows,
with no rank and the verdict :data:`STOPPED_VERDICT`.

A task is an optimizee at one horizon (a record's ``horizon``: ``300 steps``, ``5 epochs``, or empty for
the optimizee's default budget): ranks, references and verdicts are per (suite, optimizee, horizon). The
paired statistics are :func:`harness.report.stats.paired`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.config.specs import horizon_order, task_label
from harness.jsonio import dumps
from harness.report.stats import paired
from harness.stages.outputs import STATUS_STOPPED

#: the verdict of a row with a seed that early stopping ended (it has no final metric to rank by)
STOPPED_VERDICT = "stopped early"

EXTRA_METRICS = (
    "final_train_loss",
    "test_loss",
    "test_acc",
    "wall_time_s",
    "cost_cpu_s",
    "step_ratio_vs_adam",
    "state_bytes_per_param",
)

#: a row's identity, and a task's (the unit of ranks, references and tables)
GROUP = ["suite", "optimizee", "horizon", "optimizer"]
TASK = ["suite", "optimizee", "horizon"]

#: the CSV's columns, in order (the extra metrics that any row has follow them)
CSV_COLUMNS = [
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
    "stopped",
    "reference",
    "diff",
    "ci_low",
    "ci_high",
    "verdict",
]


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trial record: its group keys, ``family``/``metric``/``mode`` (its group's first), ``seed``
    (a string), ``status`` and ``value``, the metric's value: +inf (-inf for a ``max`` metric) when the trial
    diverged or lacks the metric, NaN when it errored or was stopped early (it has no value). ``ok`` (not
    errored), ``finite``, ``div`` (diverged), ``err`` (errored) and ``stop`` (stopped early) are the flags the
    group-by counts."""
    df = pd.DataFrame(
        {
            "suite": [r["suite"] for r in records],
            "optimizee": [r["optimizee"] for r in records],
            "horizon": [r.get("horizon") or "" for r in records],
            "optimizer": [r["optimizer"] for r in records],
            "family": [r["family"] for r in records],
            "metric": [r["metric"] for r in records],
            "mode": [r["mode"] for r in records],
            "seed": [str(r["seed"]) for r in records],
            "status": [r["status"] for r in records],
        }
    )
    firsts = ["family", "metric", "mode"]
    df[firsts] = df.groupby(GROUP, sort=False)[firsts].transform("first")
    values = []
    for r, metric, mode in zip(records, df["metric"], df["mode"], strict=True):
        if r["status"] in ("error", STATUS_STOPPED):
            values.append(math.nan)
        elif r["status"] == "diverged" or metric not in r["metrics"]:
            values.append(math.inf if mode == "min" else -math.inf)
        else:
            values.append(float(r["metrics"][metric]))
    df["value"] = np.asarray(values, dtype=np.float64)
    df["ok"] = df["status"] != "error"
    df["finite"] = df["ok"] & np.isfinite(df["value"])
    df["div"] = df["status"] == "diverged"
    df["err"] = ~df["ok"]
    df["stop"] = df["status"] == STATUS_STOPPED
    return df


def _mean(values: pd.Series) -> float:
    """``statistics.fmean``: the exactly rounded mean (a NaN or an infinity in ``values`` gives NaN/inf)."""
    return statistics.fmean(values.tolist()) if len(values) else math.nan


def _std(values: pd.Series) -> float:
    """The sample standard deviation (``statistics.stdev``, exact), when 2+ values all finite; else 0."""
    v = values.tolist()
    return statistics.stdev(v) if len(v) > 1 and all(math.isfinite(x) for x in v) else 0.0


def _extra_means(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per group, the mean of each :data:`EXTRA_METRICS` entry over the records that have it (errored ones
    too; a NaN value makes the mean NaN), and ``has_<metric>``: whether any record has it."""
    long = pd.DataFrame(
        [
            (r["suite"], r["optimizee"], r.get("horizon") or "", r["optimizer"], m, float(r["metrics"][m]))
            for r in records
            for m in EXTRA_METRICS
            if m in r["metrics"]
        ],
        columns=[*GROUP, "name", "value"],
    )
    by = long.groupby([*GROUP, "name"], sort=False)["value"]
    means = by.agg(_mean).unstack("name")
    has = by.size().unstack("name").notna().add_prefix("has_")
    return means.join(has)


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (suite, optimizee, horizon, optimizer): mean/std/n of the metric, ranked per task
    (optimizee and horizon; tasks in order of optimizee, then horizon ascending).

    A seed that diverged counts as +inf (or -inf for a ``max`` metric), so any divergence puts the
    row after every row that never diverged; the count of diverged seeds is in ``diverged``. A seed
    whose trial errored has no value: it is left out of the mean, counted in ``errored``, and the row
    ranks after the complete ones (its mean is over fewer seeds). A row with a seed stopped early
    (``stopped`` counts them) is not ranked (``rank`` None, verdict :data:`STOPPED_VERDICT`): it follows the
    ranked rows of its task, its mean over the seeds that finished (NaN when none did).
    """
    if not records:
        return []
    df = records_frame(records)
    table = df.groupby(GROUP, sort=False).agg(
        family=("family", "first"),
        metric=("metric", "first"),
        mode=("mode", "first"),
        n=("ok", "sum"),
        n_finite=("finite", "sum"),
        diverged=("div", "sum"),
        errored=("err", "sum"),
        stopped=("stop", "sum"),
    )
    ok = df.loc[df["ok"]]
    table = table.join(ok.sort_values("seed", kind="stable").groupby(GROUP, sort=False).agg(seeds=("seed", list)))
    # seeds stopped early have no final value: the mean is over the seeds that finished
    done = ok.loc[~ok["stop"]]
    by_done = done.sort_values("seed", kind="stable").groupby(GROUP, sort=False)
    table = table.join(by_done.agg(mean=("value", _mean), std=("value", _std)))
    # a mean over seeds that all have a finite value, else the worst value (no seed with a value: too; no
    # seed that finished, of a row with stopped seeds: NaN)
    worst = pd.Series(np.where(table["mode"] == "min", math.inf, -math.inf), index=table.index)
    n_done = table["n"] - table["stopped"]
    table["mean"] = table["mean"].where((table["n_finite"] == n_done) & (n_done > 0), worst)
    table["mean"] = table["mean"].where((table["stopped"] == 0) | (n_done > 0), math.nan)
    table["std"] = table["std"].fillna(0.0)
    table = table.join(_extra_means(records)).reset_index()

    horizons = sorted(set(table["horizon"]), key=horizon_order)
    table["_horizon"] = table["horizon"].map({h: i for i, h in enumerate(horizons)})
    table["_stopped"] = table["stopped"] > 0
    table["_incomplete"] = (table["diverged"] > 0) | (table["errored"] > 0)
    table["_signed"] = table["mean"].where(table["mode"] == "min", -table["mean"])
    order = ["suite", "optimizee", "_horizon", "_stopped", "_incomplete", "_signed", "optimizer"]
    table = table.sort_values(order, kind="stable").reset_index(drop=True)
    table["rank"] = table.groupby(TASK, sort=False).cumcount() + 1
    table["reference"] = _references(table)

    per_seed = {
        key: dict(zip(g["seed"], g["value"], strict=True)) for key, g in done.groupby(GROUP, sort=False)
    }
    rows = []
    for rec in table.to_dict("records"):
        row: dict[str, Any] = {k: rec[k] for k in (*GROUP, "family", "metric", "mode")}
        seeds = rec["seeds"]
        row.update(
            mean=float(rec["mean"]),
            std=float(rec["std"]),
            n=int(rec["n"]),
            diverged=int(rec["diverged"]),
            errored=int(rec["errored"]),
            stopped=int(rec["stopped"]),
            seeds=list(seeds) if isinstance(seeds, list) else [],
        )
        for m in EXTRA_METRICS:
            if m != row["metric"] and rec.get(f"has_{m}") is True:
                row[m] = float(rec[m])
        row["rank"] = None if rec["_stopped"] else int(rec["rank"])
        task, ref = tuple(rec[k] for k in TASK), rec["reference"]
        row["reference"] = ref
        if rec["_stopped"]:
            row.update(diff=math.nan, ci_low=math.nan, ci_high=math.nan, verdict=STOPPED_VERDICT)
        elif rec["optimizer"] == ref:
            row.update(diff=0.0, ci_low=math.nan, ci_high=math.nan, verdict="reference")
        else:
            mine = per_seed.get((*task, rec["optimizer"]), {})
            p = paired(mine, per_seed.get((*task, ref), {}), row["mode"])
            row.update(diff=p.diff, ci_low=p.low, ci_high=p.high, verdict=p.verdict)
        rows.append(row)
    return rows


def _references(table: pd.DataFrame) -> pd.Series:
    """Per row, its task's reference: the best (lowest-ranked) complete Adam row, else the best complete
    row, else the top ranked row (a row with seeds stopped early is never one). ``table`` is in rank order."""
    complete = ~table["_incomplete"] & ~table["_stopped"]
    priority = np.where(
        complete & (table["family"] == "adam"), 0, np.where(complete, 1, np.where(table["_stopped"], 3, 2))
    )
    picked = table.assign(_priority=priority).sort_values(["_priority", "rank"], kind="stable")
    refs = picked.groupby(TASK, sort=False)["optimizer"].first().to_frame("_ref")
    return table.join(refs, on=TASK)["_ref"]


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
    """Rows as CSV: :data:`CSV_COLUMNS`, then the extra metrics any row has (blank where a row lacks one or
    holds None), floats in full (non-finite ones as ``inf``/``nan``), CRLF line ends (as ``csv`` writes)."""
    cols = CSV_COLUMNS + [m for m in EXTRA_METRICS if any(m in r for r in rows)]
    cells = [{c: "" if r.get(c) is None else r[c] for c in cols} for r in rows]
    frame = pd.DataFrame(cells, columns=cols, dtype=object)
    return frame.to_csv(index=False, na_rep="nan", lineterminator="\r\n")


def _fmt_diff(r: dict[str, Any]) -> str:
    if r.get("verdict") == "reference":
        return "-"
    d, lo, hi = r.get("diff", math.nan), r.get("ci_low", math.nan), r.get("ci_high", math.nan)
    if not math.isfinite(d):
        return "n/a"
    ci = f" [{lo:+.3g}, {hi:+.3g}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{d:+.3g}{ci}"


def _by_task(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["suite"], r["optimizee"], r.get("horizon") or ""), []).append(r)
    return by


#: short headers of the extra metrics in the terminal table (the JSON and CSV keep the metric names)
_SHORT = {
    "test_loss": "test loss",
    "test_acc": "test acc",
    "wall_time_s": "wall s",
    "cost_cpu_s": "CPU s",
    "step_ratio_vs_adam": "step / Adam",
    "state_bytes_per_param": "state B / param",
}


def _n_cell(r: dict[str, Any]) -> str:
    extra = [f"{r['diverged']} div"] if r.get("diverged") else []
    extra += [f"{r['errored']} err"] if r.get("errored") else []
    extra += [f"{r['stopped']} stopped"] if r.get("stopped") else []
    return f"{r['n']}" + (f" ({', '.join(extra)})" if extra else "")


def _rank_cell(r: dict[str, Any]) -> str:
    """The rank, or ``-`` for a row that is not ranked (seeds stopped early)."""
    return "-" if r.get("rank") is None else str(r["rank"])


def _legend_keys(rs: list[dict[str, Any]]) -> list[str]:
    """The ``#`` cells of one task's rows where a legend names them: the rank, or ``s1``, ``s2``, ... for the
    rows that are not ranked (seeds stopped early), so that each key names one row."""
    keys, n = [], 0
    for r in rs:
        if r.get("rank") is None:
            n += 1
            keys.append(f"s{n}")
        else:
            keys.append(str(r["rank"]))
    return keys


def _mean_cell(r: dict[str, Any]) -> str:
    if math.isnan(r["mean"]):
        return "-"
    if not math.isfinite(r["mean"]):
        return _fmt(r["mean"])
    return (
        f"{r['mean']:.4g} ± {r['std']:.2g}" if math.isfinite(r.get("std", math.nan)) else f"{r['mean']:.4g}"
    )


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """Per task, a ``###`` heading and one Markdown table with every column of the terminal's two tables
    (rank, optimizer, mean ± std, seeds, Δ [95% CI], verdict, then the costs and other metrics): for a
    paper, an issue or a notebook."""
    out = []
    for (suite, optimizee, horizon), rs in _by_task(rows).items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        extras = [m for m in EXTRA_METRICS if m != metric and any(m in r for r in rs)]
        better = "lower" if mode == "min" else "higher"
        out.append(
            f"### {suite} / {task_label(optimizee, horizon)}\n\n{metric}, {better} is better; "
            f"Δ: paired difference to {rs[0].get('reference', '')} over seeds\n"
        )
        frame = pd.DataFrame(
            [
                {
                    "#": _rank_cell(r),
                    "optimizer": r["optimizer"],
                    "mean ± std": _mean_cell(r),
                    "seeds": _n_cell(r),
                    "Δ [95% CI]": _fmt_diff(r),
                    "verdict": str(r.get("verdict", "")),
                    **{_SHORT.get(m, m): _fmt(r.get(m, "")) for m in extras},
                }
                for r in rs
            ]
        )
        out.append(
            frame.to_markdown(index=False, colalign=["right", "left"] + ["right"] * (frame.shape[1] - 2))
        )
    return "\n\n".join(out) + "\n"


def _others(rs: list[dict[str, Any]]) -> int:
    """The width the ranking's other columns take unwrapped beside the optimizer's name (cells, headers,
    borders and padding): past it, the name moves to a legend rather than squeeze the numbers onto two lines."""
    columns = [
        ["#", *_legend_keys(rs)],
        ["mean ± std", *[_mean_cell(r) for r in rs]],
        ["seeds", *[_n_cell(r) for r in rs]],
        ["Δ [95% CI]", *[_fmt_diff(r) for r in rs]],
        ["verdict", *[str(r.get("verdict", "")) for r in rs]],
    ]
    return sum(max(len(c) for c in col) for col in columns) + 3 * (len(columns) + 1) + 1


def to_rich_tables(rows: list[dict[str, Any]], width: int | None = None, wide: bool = False) -> list[Any]:
    """Per task (suite, optimizee, horizon), titled ``suite / mlp · 300 steps``: the ranking, then its costs
    and other metrics. The optimizer's name is never cut: where it does not fit beside the other columns of
    a ``width``-column terminal, the tables show the rank alone and a legend table names each rank.
    ``wide``: one table per task with every column, whatever the width (``sl2o leaderboard --wide``)."""
    from rich.table import Table

    tables = []
    for (suite, optimizee, horizon), rs in _by_task(rows).items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        extras = [m for m in EXTRA_METRICS if m != metric and any(m in r for r in rs)]
        better = "lower" if mode == "min" else "higher"
        ref = rs[0].get("reference", "")
        task = f"{suite} / {task_label(optimizee, horizon)}"
        legend = not wide and width is not None and max(len(r["optimizer"]) for r in rs) + _others(rs) > width
        cells = _legend_keys(rs) if legend else [_rank_cell(r) for r in rs]
        if legend:
            stopped = " (s: stopped early, not ranked)" if any(r.get("rank") is None for r in rs) else ""
            key = Table(title=f"{task}: optimizers by rank{stopped}")
            key.add_column("#", justify="right")
            key.add_column("optimizer", no_wrap=True)
            for cell, r in zip(cells, rs, strict=True):
                key.add_row(cell, r["optimizer"])
            tables.append(key)
        t = Table(title=f"{task}  ({metric}, {better} is better; Δ: paired difference to {ref} over seeds)")
        t.add_column("#", justify="right")
        if not legend:
            t.add_column("optimizer", no_wrap=True)
        t.add_column("mean ± std", justify="right")
        t.add_column("seeds", justify="right")
        t.add_column("Δ [95% CI]", justify="right")
        t.add_column("verdict")
        for m in extras if wide else []:
            t.add_column(_SHORT.get(m, m), justify="right")
        for cell, r in zip(cells, rs, strict=True):
            name = [] if legend else [r["optimizer"]]
            t.add_row(
                cell,
                *name,
                _mean_cell(r),
                _n_cell(r),
                _fmt_diff(r),
                str(r.get("verdict", "")),
                *[_fmt(r.get(m, "")) for m in extras if wide],
            )
        tables.append(t)
        if extras and not wide:
            c = Table(title=f"{task}: costs and other metrics (seed means)")
            c.add_column("#", justify="right")
            if not legend:
                c.add_column("optimizer", no_wrap=True)
            for m in extras:
                c.add_column(_SHORT.get(m, m), justify="right")
            for cell, r in zip(cells, rs, strict=True):
                name = [] if legend else [r["optimizer"]]
                c.add_row(cell, *name, *[_fmt(r.get(m, "")) for m in extras])
            tables.append(c)
    return tables
