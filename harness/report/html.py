"""``sl2o report SUITE``: one self-contained HTML page (PNGs beside it) of a suite's latest run, also logged
as MLflow artifacts (``report/``) of the suite run: the leaderboard, the across-task scores, their plots,
and each stage's panels, drawn by its kind's ``report`` hook from a view of its MLflow runs.
"""

from __future__ import annotations

import html
import math
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from harness import tracking
from harness.config.specs import horizon_order, task_label
from harness.registry import STAGES
from harness.report import across
from harness.report import leaderboard as report
from harness.report.plots import (
    TimelineTrial,
    optimizer_styles,
    plot_loss_curves,
    plot_profile,
    plot_timeline,
)
from harness.stages.outputs import STATUS_DIVERGED, STATUS_OK, TAG, CostKey
from harness.stages.views import Panel, RunView

#: the fewest tasks (optimizee x horizon) a performance profile is drawn for
MIN_PROFILE_TASKS = 3
#: the folder of the suite run's artifacts the report is logged under
ARTIFACT_DIR = "report"
LEARNED_FAMILIES = ("teacher", "symbolic")


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, its plots, and the suite run it was logged to."""

    index: Path
    plots: list[Panel] = field(default_factory=list)
    suite_run_id: str = ""
    notes: list[str] = field(default_factory=list)


class MlflowStageView:
    """A :class:`~harness.stages.views.StageView` served from MLflow: downloads go under ``scratch``."""

    def __init__(
        self,
        client: MlflowClient,
        scratch: Path,
        key: str,
        kind: str,
        name: str,
        run: RunView | None,
        trials: list[RunView],
        earlier: list[MlflowStageView],
    ) -> None:
        self._client, self._scratch = client, scratch
        self.key, self.kind, self.name, self.run, self.trials, self.earlier = (
            key,
            kind,
            name,
            run,
            trials,
            earlier,
        )

    def download(self, run_id: str, path: str) -> Path | None:
        dst = self._scratch / run_id
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self._client.download_artifacts(run_id, path, str(dst)))
        except Exception:  # noqa: BLE001 - a missing artifact (MLflow raises several types) means "none"
            return None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(int(m.step), float(m.value)) for m in self._client.get_metric_history(run_id, key)]


def _tag(run: Any, name: str, default: str = "") -> str:
    return run.data.tags.get(f"{TAG}.{name}", default)


def _view(run: Any) -> RunView:
    return RunView(run.info.run_id, dict(run.data.tags))


def stage_views(client: MlflowClient, exp_id: str, suite_run: Any, scratch: Path) -> list[MlflowStageView]:
    """The suite run's stages in order, each with its stage run and one finished run per trial."""
    out: list[MlflowStageView] = []
    for key in [k for k in _tag(suite_run, "stage_keys").split(",") if k]:
        runs = tracking.find_runs(client, [exp_id], f"tags.`{TAG}.stage_key` = '{key}'")
        stage_runs = [r for r in runs if _tag(r, "kind") == "stage"]
        stage_runs.sort(key=lambda r: (_tag(r, "complete") == "true", r.info.start_time or 0))
        trials: dict[str, Any] = {}
        for r in sorted(runs, key=lambda r: r.info.end_time or 0):
            if _tag(r, "kind") == "trial" and r.info.status == "FINISHED":
                trials[_tag(r, "trial_key", r.info.run_id)] = r
        ref = stage_runs[-1] if stage_runs else next(iter(trials.values()), None)
        if ref is None:
            continue
        ordered = sorted(trials.values(), key=lambda r: r.data.tags.get("mlflow.runName", ""))
        out.append(
            MlflowStageView(
                client,
                scratch,
                key,
                _tag(ref, "stage_kind"),
                _tag(ref, "stage", key),
                _view(stage_runs[-1]) if stage_runs else None,
                [_view(r) for r in ordered],
                list(out),
            )
        )
    return out


def timeline_trials(client: MlflowClient, exp_id: str, suite_run: Any) -> list[TimelineTrial]:
    """Every recorded attempt (finished or failed) of the trials of the suite run's stages, for the timeline:
    its stage and node tags, its start (``started_at_s``, the trial's own clock; else the run's creation, which
    the tracker may have written later) and end (start + ``cost_wall_s``; else the run's end)."""
    out = []
    for key in [k for k in _tag(suite_run, "stage_keys").split(",") if k]:
        runs = tracking.find_runs(
            client, [exp_id], f"tags.`{TAG}.stage_key` = '{key}' and tags.`{TAG}.kind` = 'trial'"
        )
        for r in runs:
            if r.info.status not in ("FINISHED", "FAILED"):
                continue
            m = r.data.metrics
            start = m.get(CostKey.START, (r.info.start_time or 0) / 1000)
            end = start + m[CostKey.WALL] if CostKey.WALL in m else (r.info.end_time or 0) / 1000
            if not start or end < start:
                continue
            status = "error" if r.info.status == "FAILED" else _tag(r, "status", STATUS_OK)
            out.append(
                TimelineTrial(
                    _tag(r, "stage", "?"), _tag(r, CostKey.NODE, "node unknown"), start, end, status
                )
            )
    return out


def _timeline(client: MlflowClient, exp_id: str, suite_run: Any, out: Path, notes: list[str]) -> list[Panel]:
    trials = timeline_trials(client, exp_id, suite_run)
    if not trials:
        notes.append("timeline: no trial of this suite run's stages is recorded")
        return []
    nodes = len({t.node for t in trials})
    return [
        Panel(
            plot_timeline(trials, out / "timeline.png"),
            "Suite timeline",
            f"{len(trials)} trial attempts on {nodes} node(s), coloured by stage, one lane per node (a row per "
            "trial running at once there); top: each stage's span. A stage reused from an earlier run shows "
            "its trials when they ran.",
        )
    ]


# -- the sections ---------------------------------------------------------------------------------------------
def task_curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """``curves[task][optimizer]`` = the per-seed curves of the finished trials, one task per (optimizee,
    horizon) labelled ``mlp · 300 steps``, in order of optimizee, then horizon ascending. A diverged trial's
    curve ends where it diverged (one that logged nothing is ``[(0, inf)]``: the plot names it)."""
    by: dict[tuple[str, tuple[Any, ...]], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        curve = r.get("curve") or ([(0, math.inf)] if r["status"] == STATUS_DIVERGED else None)
        if curve and r["status"] in (STATUS_OK, STATUS_DIVERGED):
            horizon = r.get("horizon") or ""
            by[(r["optimizee"], horizon_order(horizon))][r["optimizer"]].append(curve)
    return {task_label(optimizee, order[2]): curves for (optimizee, order), curves in sorted(by.items())}


def _loss_and_profile(records: list[dict[str, Any]], out: Path, notes: list[str]) -> list[Panel]:
    curves = task_curves(records)
    families = {
        r["optimizer"]: r.get("family") or "" for r in records if r["status"] in (STATUS_OK, STATUS_DIVERGED)
    }
    highlight = [o for o, f in families.items() if f in LEARNED_FAMILIES]
    styles = optimizer_styles(list(families), highlight)
    plots = []
    if curves:
        plots.append(
            Panel(
                plot_loss_curves(curves, out / "loss_curves.png", highlight=highlight, styles=styles),
                "Loss curves",
                "Minibatch train loss of each evaluate trial: mean over seeds with a 95% t-interval band, one "
                "panel per optimizee and horizon (teacher and symbolic optimizers drawn thick; a band wider than most of the "
                "panel is drawn as dotted edges; a diverged optimizer is drawn up to where it diverged and marked x, "
                "one that diverged before its first logged step is named in the panel title).",
            )
        )
    _, per_task = across.from_records(records)
    times = {task: {s["optimizer"]: s["time_to_target"] for s in scores} for task, scores in per_task.items()}
    n_tasks = len([t for t in times.values() if t])
    if 0 < n_tasks < MIN_PROFILE_TASKS:
        notes.append(
            f"performance profile: drawn over {MIN_PROFILE_TASKS} or more tasks (optimizee and horizon); "
            f"this suite has {n_tasks}, where the leaderboard says more"
        )
    if n_tasks >= MIN_PROFILE_TASKS:
        plots.append(
            Panel(
                plot_profile(times, out / "performance_profile.png", highlight=highlight, styles=styles),
                "Performance profile",
                "rho(tau): fraction of tasks (optimizee and horizon) on which an optimizer reaches the target (the best baseline's "
                "final loss) within tau times the fastest optimizer's steps; higher and further left is better.",
            )
        )
    return plots


# -- the page -------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "diverged" if v > 0 else "-inf"
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>\n" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>'


def _leaderboard_html(rows: list[dict[str, Any]]) -> str:
    """One table per task (optimizee and horizon), headed ``mlp · 300 steps``; rows in rank order."""
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["suite"], r["optimizee"], r.get("horizon") or "")].append(r)
    parts = []
    for (_, optimizee, horizon), rs in by.items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        ref = rs[0].get("reference", "")
        header = ["#", "optimizer", "family", f"{metric} mean", "std", "n", "diverged", "errored", "stopped"]
        header += [f"Δ vs {ref}", "95% CI low", "95% CI high", "verdict"]
        body = [
            [
                "–" if r.get("rank") is None else r["rank"],
                r["optimizer"],
                r["family"],
                r["mean"],
                r["std"],
                r["n"],
                r["diverged"],
                r.get("errored", 0),
                r.get("stopped", 0),
                "–" if r.get("verdict") == "reference" else r.get("diff", math.nan),
                r.get("ci_low", math.nan),
                r.get("ci_high", math.nan),
                r.get("verdict", ""),
            ]
            for r in rs
        ]
        better = "lower" if mode == "min" else "higher"
        title = html.escape(task_label(optimizee, horizon))
        parts.append(f"<h3>{title} <small>({html.escape(metric)}, {better} is better)</small></h3>")
        parts.append(_table(header, body, "num"))
    return "\n".join(parts)


def _across_html(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return "<p>No optimizer has a curve to score.</p>"
    cols = list(summary[0])
    return _table(cols, [[r[c] for c in cols] for r in summary], "num")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:0.2em} .meta{color:#666;font-size:0.9em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ddd;padding:3px 8px} th{background:#f3f3f3;text-align:left}
table.num td{text-align:right} table.num td:nth-child(2),table.num td:nth-child(3){text-align:left}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:0.9em;margin-top:0.3em}
"""


def render_html(
    suite: str,
    suite_run: Any,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    plots: list[Panel],
    notes: Sequence[str] = (),
) -> str:
    """The page: title, leaderboard, across-task summary, and every plot with its caption (relative links)."""
    tags = suite_run.data.tags
    meta = (
        f"suite run {html.escape(suite_run.info.run_id)} · metric {html.escape(tags.get(f'{TAG}.metric', '?'))}"
        f" · harness {html.escape(tags.get(f'{TAG}.version', '?'))}"
        f" · commit {html.escape(tags.get(f'{TAG}.git_commit', '?')[:10])}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sl2o report: {html.escape(suite)}</title><style>{CSS}</style></head><body>",
        f"<h1>symbolic-l2o report: {html.escape(suite)}</h1>",
        f'<p class="meta">{meta}</p>',
        "<h2>Leaderboard</h2>",
        "<p>Seeds aggregated; each row is compared per seed with the reference (the best Adam) by the mean "
        "difference and a bootstrap 95% CI; a CI covering 0 is a tie.</p>",
        _leaderboard_html(rows) if rows else "<p>No finished evaluate trials.</p>",
        "<h2>Across tasks</h2>",
        "<p>Over every optimizee and horizon: geometric-mean speedup over tuned Adam, targets reached, and the "
        "performance profile rho(tau).</p>",
        _across_html(summary),
        "<h2>Plots</h2>",
    ]
    for p in plots:
        parts.append(
            f'<figure><h3>{html.escape(p.title)}</h3><img src="{html.escape(p.file.name)}" '
            f'alt="{html.escape(p.title)}"><figcaption>{html.escape(p.caption)}</figcaption></figure>'
        )
    if notes:
        parts.append(
            "<h2>Not shown</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_report(
    client: MlflowClient,
    suite: str,
    out: Path,
    *,
    log_artifacts: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> Report:
    """Write ``out/index.html`` and its PNGs for the latest run of ``suite``; log them to the suite run."""
    exps = tracking.our_experiments(client, suite)
    if not exps:
        raise ValueError(f"no suite named {suite!r} in this MLflow store")
    exp = exps[0]
    suite_run = tracking.latest_suite_run(client, exp.experiment_id)
    if suite_run is None:
        raise ValueError(f"suite {suite!r} has no suite run in this MLflow store")
    out.mkdir(parents=True, exist_ok=True)
    result = Report(index=out / "index.html", suite_run_id=suite_run.info.run_id)
    records = tracking.leaderboard_records(client, suite, curves=True)
    rows = report.aggregate([dict(r) for r in records])
    summary = across.from_records(records)[0] if records else []
    plots = _loss_and_profile(records, out, result.notes) if records else []
    plots += _timeline(client, exp.experiment_id, suite_run, out, result.notes)
    with tempfile.TemporaryDirectory(prefix="sl2o-report-") as tmpdir:
        for st in stage_views(client, exp.experiment_id, suite_run, Path(tmpdir)):
            try:
                if st.kind in STAGES:
                    plots += STAGES.get(st.kind).report(st, out)
            except Exception as err:  # noqa: BLE001 - one unreadable stage must not lose the whole page
                result.notes.append(f"stage {st.name!r}: no plot ({type(err).__name__}: {err})")
                log(f"warning: {result.notes[-1]}")
    result.plots = plots
    result.index.write_text(
        render_html(suite, suite_run, rows, summary, plots, result.notes), encoding="utf-8"
    )
    if log_artifacts:
        for p in plots:
            client.log_artifact(suite_run.info.run_id, str(p.file), ARTIFACT_DIR)
        client.log_artifact(suite_run.info.run_id, str(result.index), ARTIFACT_DIR)
    return result
