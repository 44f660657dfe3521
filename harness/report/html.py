"""``sl2o report SUITE``: one self-contained HTML page (PNG files beside it) of a suite's latest run, also
logged as MLflow artifacts (``report/``) of the suite's parent run.

Reads MLflow only (the layout of :mod:`harness.tracking` / :mod:`harness.engine.runner`): the latest suite run of
the experiment named like the suite lists its stage keys (``sl2o.stage_keys``); stage runs carry the stage
level artifacts (distill: ``front.json``/``chosen.json`` per source), trial runs their metrics, metric
histories and artifacts. The plots are drawn by :mod:`harness.report.plots` and :mod:`harness.symbolic.plots`.
"""

from __future__ import annotations

import html
import json
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from harness import tracking
from harness.config.specs import horizon_order, task_label
from harness.report import across
from harness.report import leaderboard as report
from harness.report.plots import (
    optimizer_styles,
    plot_loss_curves,
    plot_meta_train,
    plot_meta_tune,
    plot_profile,
)
from harness.stages.outputs import (
    CHOSEN_FILE,
    DATASET_FILE,
    HISTORY_FILE,
    MERGED_FRONT_FILE,
    STATUS_OK,
    TAG,
)

#: the folder of the suite run's artifacts the report is logged under
ARTIFACT_DIR = "report"
#: at most this many input variables get a panel in the update-rule plot
MAX_RULE_VARS = 6
LEARNED_FAMILIES = ("teacher", "symbolic")


@dataclass
class Plot:
    """One PNG of the page: its file, a heading and a one-line caption."""

    file: Path
    title: str
    caption: str


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, its plots, and the suite run it was logged to."""

    index: Path
    plots: list[Plot] = field(default_factory=list)
    suite_run_id: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Stage:
    key: str
    kind: str
    name: str
    run_id: str | None
    trials: list[Any]


def _tag(run: Any, name: str, default: str = "") -> str:
    return run.data.tags.get(f"{TAG}.{name}", default)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _stages(client: MlflowClient, exp_id: str, suite_run: Any) -> list[_Stage]:
    """The suite run's stages in order, each with its stage run and one finished run per trial."""
    out = []
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
        out.append(
            _Stage(
                key,
                _tag(ref, "stage_kind"),
                _tag(ref, "stage", key),
                stage_runs[-1].info.run_id if stage_runs else None,
                sorted(trials.values(), key=lambda r: r.data.tags.get("mlflow.runName", "")),
            )
        )
    return out


def _download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """Artifact ``path`` of run ``run_id`` downloaded under ``dst`` (None when the run has no such file)."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception:  # noqa: BLE001 - a missing artifact (MLflow raises several types) means "none"
        return None


# -- the sections ---------------------------------------------------------------------------------------------
def task_curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """``curves[task][optimizer]`` = the per-seed curves of the finished trials, one task per (optimizee,
    horizon) labelled ``mlp · 300 steps``, in order of optimizee, then horizon ascending."""
    by: dict[tuple[str, tuple[Any, ...]], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("curve") and r["status"] == STATUS_OK:
            horizon = r.get("horizon") or ""
            by[(r["optimizee"], horizon_order(horizon))][r["optimizer"]].append(r["curve"])
    return {task_label(optimizee, order[2]): curves for (optimizee, order), curves in sorted(by.items())}


def _loss_and_profile(records: list[dict[str, Any]], out: Path) -> list[Plot]:
    curves = task_curves(records)
    families = {
        r["optimizer"]: r.get("family") or "" for r in records if r.get("curve") and r["status"] == STATUS_OK
    }
    highlight = [o for o, f in families.items() if f in LEARNED_FAMILIES]
    styles = optimizer_styles(list(families), highlight)
    plots = []
    if curves:
        plots.append(
            Plot(
                plot_loss_curves(curves, out / "loss_curves.png", highlight=highlight, styles=styles),
                "Loss curves",
                "Minibatch train loss of each evaluate trial: mean over seeds with a 95% t-interval band, one "
                "panel per optimizee and horizon (teacher and symbolic optimizers drawn thick; a band wider than most of the "
                "panel is drawn as dotted edges).",
            )
        )
    _, per_task = across.from_records(records)
    times = {task: {s["optimizer"]: s["time_to_target"] for s in scores} for task, scores in per_task.items()}
    if any(times.values()):
        plots.append(
            Plot(
                plot_profile(times, out / "performance_profile.png", highlight=highlight, styles=styles),
                "Performance profile",
                "rho(tau): fraction of tasks (optimizee and horizon) on which an optimizer reaches the target (the best baseline's "
                "final loss) within tau times the fastest optimizer's steps; higher and further left is better.",
            )
        )
    return plots


def _meta_train(client: MlflowClient, st: _Stage, out: Path, tmp: Path) -> list[Plot]:
    runs = []
    for t in st.trials:
        rid = t.info.run_id
        run: dict[str, Any] = {
            "label": f"{_tag(t, 'teacher', '?')} on {_tag(t, 'optimizee', '?')} s{_tag(t, 'seed', '?')}",
            "meta_loss": [(m.step, m.value) for m in client.get_metric_history(rid, "meta_loss")],
            "val_loss": [(m.step, m.value) for m in client.get_metric_history(rid, "val_loss")],
            "cl_steps": [],
        }
        hist_path = _download(client, rid, HISTORY_FILE, tmp / rid)
        if hist_path is not None:
            doc = json.loads(hist_path.read_text())
            run["cl_steps"] = curriculum_steps(doc)
            run["curriculum"] = bool((doc.get("config") or {}).get("curriculum"))
            if not run["meta_loss"]:
                run["meta_loss"] = [(e["episode"], e["meta_loss"]) for e in doc.get("history", [])]
        run["meta_loss"] = sorted(run["meta_loss"])
        run["val_loss"] = sorted(run["val_loss"])
        runs.append(run)
    if not runs:
        return []
    n_cl = sum(len(r["cl_steps"]) for r in runs)
    cl = f"; green dashed lines: {n_cl} curriculum step(s)" if n_cl else "; no curriculum steps"
    return [
        Plot(
            plot_meta_train(runs, out / f"meta_train_{_slug(st.name)}.png"),
            f"Meta-training ({st.name})",
            f"Per-episode meta-loss (faint) with its running mean, and the validation loss (star: the best, "
            f"whose weights are kept){cl}.",
        )
    ]


def curriculum_steps(doc: dict[str, Any]) -> list[tuple[int, str, int | None]]:
    """``(episode, event, unroll length after it)`` where a meta-training ``history.json`` advanced its
    curriculum (``cl_event`` ``advance``, and the first ``done``), else where ``cl_stage`` changed."""
    hist = doc.get("history") or []
    if not (doc.get("config") or {}).get("curriculum", any(e.get("cl_event") for e in hist)):
        return []
    lengths = (doc.get("config") or {}).get("cl_lengths") or []
    steps: list[tuple[int, str, int | None]] = []
    prev = hist[0].get("cl_stage", 0) if hist else 0
    done = False
    for i, e in enumerate(hist):
        event = e.get("cl_event") or ""
        stage = e.get("cl_stage", prev)
        nxt = hist[i + 1] if i + 1 < len(hist) else e
        if event == "advance" or (event == "done" and not done) or (not event and stage != prev):
            done = done or event == "done"
            length = lengths[stage] if isinstance(stage, int) and 0 <= stage < len(lengths) else None
            steps.append((int(e["episode"]), event or "stage", length or nxt.get("episode_length")))
        prev = stage
    return steps


def _meta_tune(client: MlflowClient, st: _Stage, out: Path, tmp: Path) -> list[Plot]:
    trials = [e for t in st.trials if (e := _meta_tune_entry(client, t, st, tmp)) is not None]
    if not trials and st.run_id:  # a search run as Tune trials (search: tune): the stage run has the history
        stage_run = client.get_run(st.run_id)
        entry = _meta_tune_entry(client, stage_run, st, tmp)
        if entry is not None:
            entry["label"] = f"{st.name}: Optuna over {len(entry.get('objective') or [])} Tune trials"
        trials = [] if entry is None else [entry]
    if not trials:
        return []
    return [
        Plot(
            plot_meta_tune(trials, out / f"meta_tune_{_slug(st.name)}.png"),
            f"Meta-tuning ({st.name})",
            "Loss before and after tuning the equation's constants (mean over the evaluation seeds), the tuned "
            "constants against the initial ones (absolute values; 'kept initial' means the tuned ones were "
            "worse and were discarded), and the search's objective per trial.",
        )
    ]


def _meta_tune_entry(client: MlflowClient, t: Any, st: _Stage, tmp: Path) -> dict[str, Any] | None:
    """One run's meta-tuning record for the plot, from its ``history.json`` (None when it has none)."""
    from harness.symbolic.lang import Equation

    hist_path = _download(client, t.info.run_id, HISTORY_FILE, tmp / t.info.run_id)
    if hist_path is None:
        return None
    doc = json.loads(hist_path.read_text())
    details = doc.get("details") or {}
    entry: dict[str, Any] = {
        "label": f"{st.name}: {_tag(t, 'source') or _tag(t, 'method') or 'equation'} s{_tag(t, 'seed', '?')}",
        "kept": details.get("kept", "tuned"),
        "before": doc.get("before") or {},
        "after": doc.get("after") or {},
    }
    try:
        initial = Equation.parse(doc["equation_before"])
        entry["initial"] = list(initial.constants)
        entry["tuned"] = tuned_constants(doc, initial)
    except Exception:  # noqa: BLE001 - an unreadable equation leaves the constants panel empty
        pass
    hist = doc.get("history") or {}
    if hist.get("trials"):
        entry["objective"] = [_objective_value(tr.get("value")) for tr in hist["trials"]]
        entry["objective_label"] = "Optuna objective (mean train loss)"
    elif hist.get("windows"):
        entry["objective"] = [w.get("val_loss", w.get("heldout_loss", math.nan)) for w in hist["windows"]]
        entry["objective_label"] = "validation loss per window"
        entry["objective_x"] = "window"
    return entry


def _objective_value(value: Any) -> float:
    """A search trial's objective for the plot: NaN for a trial with none, inf for a diverged one (the
    objective's finite penalty, :data:`~harness.stages.meta_tune.common.DIVERGED_PENALTY`)."""
    from harness.stages.meta_tune.common import DIVERGED_PENALTY

    if value is None:
        return math.nan
    return math.inf if float(value) >= DIVERGED_PENALTY else float(value)


def tuned_constants(doc: dict[str, Any], initial: Any) -> list[float]:
    """The constants the tuning found (even when the stage kept the initial ones), from a meta_tune
    ``history.json``: the tuned equation, else Optuna's best parameters, else the last gradient window."""
    from harness.symbolic.lang import Equation

    details = doc.get("details") or {}
    if details.get("kept", "tuned") == "tuned" and doc.get("equation_after"):
        return list(Equation.parse(doc["equation_after"]).constants)
    if details.get("best_params"):
        from harness.stages.meta_tune.common import constants_from_values

        return constants_from_values(
            initial,
            details["best_params"],
            details.get("space", "log_multipliers"),
            float(details.get("radius", 10.0)),
        )
    windows = (doc.get("history") or {}).get("windows") or []
    if windows and windows[-1].get("constants"):
        return [float(c) for c in windows[-1]["constants"]]
    return list(initial.constants)


def _distill(client: MlflowClient, st: _Stage, stages: list[_Stage], out: Path, tmp: Path) -> list[Plot]:
    from harness.stages.collect import SRDataset
    from harness.symbolic.lang import Equation
    from harness.symbolic.lang.front import ParetoFront
    from harness.symbolic.plots import plot_pareto, plot_update_rule

    if st.run_id is None:
        return []
    root = tmp / st.run_id
    _download(client, st.run_id, "", root)
    chosen_files = sorted(root.rglob(CHOSEN_FILE))
    sources = sorted({_tag(t, "source") for t in st.trials if _tag(t, "source")})
    plots: list[Plot] = []
    fronts: dict[str, ParetoFront] = {}
    mc_c = None
    for chosen in chosen_files:
        source = (
            chosen.parent.name if chosen.parent != root else (sources[0] if len(sources) == 1 else st.name)
        )
        front_path = chosen.with_name(MERGED_FRONT_FILE)
        if front_path.exists():
            fronts[source] = ParetoFront.load(front_path)
            mc_c = fronts[source].provenance.get("mc")
        eq = Equation.load(chosen)
        dataset = _dataset_for(client, st, stages, source, tmp)
        if dataset is None:
            continue
        ds = SRDataset.load(dataset)
        X, y = ds.raw("val") if len(ds.y_val) else ds.raw("train")
        short = eq.with_constants([float(f"{c:.3g}") for c in eq.constants])
        name = f"update_rule_{_slug(st.name)}" + (f"_{_slug(source)}" if len(chosen_files) > 1 else "")
        plots.append(
            Plot(
                plot_update_rule(
                    eq,
                    X,
                    y,
                    ds.names,
                    out / f"{name}.png",
                    max_vars=MAX_RULE_VARS,
                    title=f"{source}: teacher vs distilled rule on held-out rows",
                ),
                f"Teacher vs equation ({st.name}, {source})",
                f"update = {short} (complexity {eq.complexity}). Grey: the teacher's update on held-out rows; "
                "blue: its mean per bin of the input; red dashed: the equation's mean per bin.",
            )
        )
    if fronts:
        path = plot_pareto(
            fronts,
            out / f"pareto_{_slug(st.name)}.png",
            title=f"merged Pareto front ({st.name})",
            mc_complexity=int(mc_c) if mc_c is not None and len(fronts) == 1 else None,
        )
        plots.insert(
            0,
            Plot(
                path,
                f"Pareto front ({st.name})",
                "Held-out R² of each equation on the merged front against its complexity; the dashed line "
                "marks the MC pick (the simplest equation within the threshold of the best fit).",
            ),
        )
    return plots


def _dataset_for(
    client: MlflowClient, st: _Stage, stages: list[_Stage], source: str, tmp: Path
) -> Path | None:
    """The ``dataset.npz`` a distill stage's source was fitted on: a trial of the closest earlier collect
    stage whose ``sl2o.source`` is ``source`` (the only trial when there is one)."""
    earlier = stages[: stages.index(st)]
    for cst in reversed([s for s in earlier if s.kind == "collect"]):
        match = [t for t in cst.trials if _tag(t, "source") == source] or (
            cst.trials if len(cst.trials) == 1 else []
        )
        for t in match:
            got = _download(client, t.info.run_id, DATASET_FILE, tmp / t.info.run_id)
            if got is not None:
                return got
    return None


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
        header = ["#", "optimizer", "family", f"{metric} mean", "std", "n", "diverged", "errored"]
        header += [f"Δ vs {ref}", "95% CI low", "95% CI high", "verdict"]
        body = [
            [
                r["rank"],
                r["optimizer"],
                r["family"],
                r["mean"],
                r["std"],
                r["n"],
                r["diverged"],
                r.get("errored", 0),
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
    plots: list[Plot],
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
    plots = _loss_and_profile(records, out) if records else []
    stages = _stages(client, exp.experiment_id, suite_run)
    with tempfile.TemporaryDirectory(prefix="sl2o-report-") as tmpdir:
        tmp = Path(tmpdir)
        for st in stages:
            try:
                if st.kind == "meta_train":
                    plots += _meta_train(client, st, out, tmp)
                elif st.kind == "distill":
                    plots += _distill(client, st, stages, out, tmp)
                elif st.kind == "meta_tune":
                    plots += _meta_tune(client, st, out, tmp)
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
