"""The ``sl2o`` command: validate and run suites, list plug-ins, show the leaderboard.

Bad input never ends in a traceback: every command meets an exception with one ``error:`` line on stderr
and exit code 2 (``--debug`` shows the traceback instead). The read-only commands (``leaderboard``,
``distill-summary``) check a SQLite store is an MLflow store before opening it and give an MLflow server
one try of at most 5 s (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, ``MLFLOW_HTTP_REQUEST_TIMEOUT=5`` unless set).
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import typer
from rich.console import Console

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from harness.config.suite import Suite
    from harness.engine.runner import StageFailed
    from harness.stages.collect import SRDataset
    from harness.stages.outputs import StageOutcome, SuiteOutcome
    from harness.symbolic.lang import Equation

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="symbolic-l2o: learn, distill and benchmark optimizers.",
    pretty_exceptions_show_locals=False,
)


def _width(tty: bool) -> int | None:
    """The terminal's own width; piped, ``$COLUMNS`` when set, else 200."""
    if tty:
        return None
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) >= 40 else 200


console = Console(width=_width(sys.stdout.isatty()))
err_console = Console(stderr=True, width=_width(sys.stderr.isatty()))

TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<workdir>/mlflow.db)."
WORKDIR_HELP = "Directory for Ray Tune state, the default MLflow DB and downloaded artifacts."


class Kind(str, Enum):
    optimizees = "optimizees"
    teachers = "teachers"
    sr_backends = "sr-backends"
    stages = "stages"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class CostAxis(str, Enum):
    cpu = "cpu"
    wall = "wall"
    gpu = "gpu"


FORMAT_HELP = "table (for the terminal), csv, json or markdown (every column)."


def terminal_safe(text: str) -> str:
    """``text`` with control characters (escape sequences, bells, ...) shown as ``\\x1b``-style escapes:
    text from files (equation provenance, error messages quoting input) never drives the terminal."""
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


def _fail(msg: str, code: int = 2) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(terminal_safe(msg))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class InputError(ValueError):
    """Bad input a command found itself (a store that is not an MLflow store, ...)."""


_DEBUG = {"on": False}


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="On an error, show the traceback instead of one 'error:' line."
    ),
) -> None:
    _DEBUG["on"] = debug


#: exceptions whose message says it all (anything else is prefixed with its type's name)
_PLAIN = (ValueError, OSError, KeyError, LookupError)


def _one_line(err: BaseException) -> str:
    """``err``'s message on one line (at most 1000 characters)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text[:1000] + " ..." if len(text) > 1000 else text


def _error_text(err: BaseException) -> str:
    """One message for ``err``: a SuiteError keeps its lines (one per wrong YAML path), others get one."""
    from harness.config.suite import SuiteError

    if isinstance(err, SuiteError):
        return str(err)
    text = _one_line(err)
    if isinstance(err, _PLAIN) and text:
        return text
    return f"{type(err).__name__}: {text} (--debug shows the traceback)"


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(fn: F) -> F:
    """Run a command; turn any exception into one ``error:`` line and exit code 2 (unless ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as err:
            if _DEBUG["on"]:
                raise
            _fail(_error_text(err))

    return wrapper  # type: ignore[return-value]


MAX_TRIALS_HELP = "Allow a stage to plan up to this many trials (default 10,000)."
MAX_SUITE_TRIALS_HELP = "Allow the suite to plan up to this many trials in all (default 50,000)."


@app.command()
@_guarded
def validate(
    file: Path = typer.Argument(..., help="Suite YAML file."),
    max_trials: int = typer.Option(None, "--max-trials", min=1, help=MAX_TRIALS_HELP),
    max_suite_trials: int = typer.Option(None, "--max-suite-trials", min=1, help=MAX_SUITE_TRIALS_HELP),
) -> None:
    """Check a suite file (and the files it names, and its trial counts); exit 2 naming each wrong YAML path.
    Prints the stage graph: the stages each stage waits for, and the waves that can run together."""
    from harness.config.graph import StageGraph
    from harness.config.suite import check_trial_caps, load_suite, trial_caps

    suite = load_suite(file)
    counts = check_trial_caps(suite, *trial_caps(max_trials, max_suite_trials))
    n = len(suite.stages)
    console.print(
        f"{file}: OK (suite {suite.name!r}, {n} stage(s): {', '.join(s.name for s in suite.stages)}; "
        f"at least {sum(counts.values()):,} trials)",
        highlight=False,
    )
    console.print(
        "stage graph (sl2o run starts each stage once the stages it waits for are done):", highlight=False
    )
    for line in StageGraph.of(suite).describe():
        console.print(line, highlight=False, markup=False)


@app.command()
@_guarded
def run(
    file: Path = typer.Argument(..., help="Suite YAML file."),
    address: str = typer.Option(
        None,
        "--address",
        help="Ray cluster: host:port, 'auto' (on a cluster node) or Ray Client ray://head:10001 "
        "(default: $RAY_ADDRESS or local Ray).",
    ),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: str = typer.Option(
        "sl2o_runs",
        "--workdir",
        help="Ray Tune state, the default MLflow DB and downloaded artifacts: a directory (on a cluster, "
        "one every node mounts at the same path) or a storage URI Ray Tune accepts (s3://, gs://, file://).",
    ),
    leaderboard: bool = typer.Option(
        True, "--leaderboard/--no-leaderboard", help="Print the leaderboard at the end."
    ),
    fresh: list[str] = typer.Option(
        [],
        "--fresh",
        help="Rerun this stage whole, discarding its earlier runs, and with it every stage downstream of it "
        "(the stages that read its outputs, directly or not) (repeatable).",
    ),
    sequential: bool = typer.Option(
        False,
        "--sequential",
        help="Run the stages one after another in suite order (default: as a graph, each stage as soon as "
        "the stages it reads are done, concurrently with the others).",
    ),
    allow_cpu_fallback: bool = typer.Option(
        False,
        "--allow-cpu-fallback",
        help="Run trials that ask for GPUs on CPUs when the cluster has no GPU (else that is an error).",
    ),
    max_trials: int = typer.Option(None, "--max-trials", min=1, help=MAX_TRIALS_HELP),
    max_suite_trials: int = typer.Option(None, "--max-suite-trials", min=1, help=MAX_SUITE_TRIALS_HELP),
) -> None:
    """Run a suite (rerunning the same command resumes it, reruns errored trials, reuses finished stages).

    Stages run as a graph: each starts once the stages it reads are done, concurrently with the others and
    sharing the cluster (a stage's max_concurrent caps its running trials); --sequential keeps suite order."""

    from harness.config.suite import load_suite

    suite = load_suite(file)  # a bad suite is one error line (see _guarded) before Ray or MLflow start
    from harness.cluster import Storage
    from harness.engine.runner import RunOptions, StageFailed, StageInputError, SuiteInterrupted, run_suite

    storage = Storage(workdir)  # a local directory, or a storage URI with a local cache beside it
    if tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ:
        storage.cache.mkdir(parents=True, exist_ok=True)
    opts = RunOptions(
        address=address,
        tracking_uri=tracking_uri,
        workdir=workdir,
        log=_log,
        fresh=frozenset(fresh),
        sequential=sequential,
        live=console.is_terminal,
        allow_cpu_fallback=allow_cpu_fallback,
        sigterm_as_interrupt=True,
        max_trials=max_trials,
        max_suite_trials=max_suite_trials,
    )
    try:
        outcome = run_suite(suite, opts)
    except SuiteInterrupted as err:
        _fail(str(err), code=130)
    except StageInputError as err:
        _fail(str(err))
    except StageFailed as failed:
        _print_failure(suite, failed)
        raise typer.Exit(1) from None
    console.print(f"suite {suite.name!r} finished in {outcome.seconds:.1f}s; MLflow: {outcome.tracking_uri}")
    _print_summary(suite, outcome.stages)
    from harness.registry import STAGES

    if leaderboard and any(STAGES.get(s.kind).leaderboard for s in suite.stages):
        _print_leaderboard(outcome.tracking_uri, suite.name, None, Format.table)
    _print_equations(outcome)


def _print_failure(suite: Suite, failed: StageFailed) -> None:
    """What ran, which trials failed (one line each, with the log), and how to go on."""

    _print_summary(suite, failed.outcome.extra.get("completed_stages", {}))
    not_started = failed.outcome.extra.get("not_started", [])
    for one in [failed, *failed.outcome.extra.get("other_failures", [])]:
        _print_stage_failure(one)
    for msg in failed.outcome.extra.get("input_errors", []):
        err_console.print(f"error: {msg}", highlight=False, markup=False, soft_wrap=True)
    names = [f.outcome.name for f in [failed, *failed.outcome.extra.get("other_failures", [])]]
    err_console.print(
        f"stages that did not run: {', '.join(not_started) if not_started else 'none'}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    err_console.print(
        "Fix the cause and rerun the same command: only the errored and missing trials run again "
        f"({' '.join(f'--fresh {n}' for n in names)} reruns {'it' if len(names) == 1 else 'them'} whole, "
        "with the stages downstream).",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _print_stage_failure(failed: StageFailed) -> None:
    """One failed stage: its counts, then each errored trial with its error and log."""
    out = failed.outcome
    err_console.print(
        f"error: stage {out.name!r} is not finished: {len(failed.failures)} trial(s) errored, "
        f"{len(out.trials)} ok",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for f in failed.failures:
        err_console.print(
            f"  {f.label}: {f.error}\n    log: {f.log}", highlight=False, markup=False, soft_wrap=True
        )


def _log(msg: str) -> None:
    console.print(terminal_safe(msg), highlight=False, soft_wrap=True, markup=False)


def _print_summary(suite: Suite, stages: Mapping[str, StageOutcome]) -> None:
    """What each stage produced (its kind's summary), in suite order."""
    from harness.registry import STAGES

    console.print("summary:", highlight=False)
    for name, st in stages.items():
        for line in STAGES.get(st.kind).summarize(suite.stage(name), st):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


def _print_equations(outcome: SuiteOutcome) -> None:
    """Print the equation the suite ended with, unless its stage's summary already did."""
    from harness.stages.outputs import chosen_equation_text

    text = chosen_equation_text(outcome, unless_in_summary=True)
    if text:
        console.print(text, highlight=False)


@app.command("leaderboard")
@_guarded
def leaderboard_cmd(
    suite: str = typer.Option(None, "--suite", help="Only this suite."),
    optimizee: str = typer.Option(
        None, "--optimizee", help="Only this optimizee or task ('mlp · 300 steps'), or a prefix of either."
    ),
    fmt: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
    wide: bool = typer.Option(
        False, "--wide", help="One table per task with every column, wider than the terminal if need be."
    ),
    across: bool = typer.Option(
        False,
        "--across",
        help="Scores across tasks (optimizee · horizon): speedup over tuned Adam, time to target, profiles.",
    ),
    at_cost: float = typer.Option(
        None,
        "--at-cost",
        metavar="SECONDS",
        help="Rank by the training loss each config reaches when its trials have spent SECONDS of cost "
        "(--cost axis; docs/leaderboard.md says how it is read); with --across, a summary of those ranks.",
    ),
    cost: CostAxis = typer.Option(
        None,
        "--cost",
        help="The cost axis: cpu (default for --at-cost), wall or gpu seconds of each trial; with --across, "
        "time to target and the profile are in these seconds instead of steps.",
    ),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
) -> None:
    """Ranked optimizers per optimizee and horizon (seeds aggregated, paired CI and verdict against the
    best Adam); with --across, one summary over all of them; with --at-cost, ranked at equal cost."""
    if at_cost is not None and not (math.isfinite(at_cost) and at_cost > 0):
        _fail(f"--at-cost must be a positive number of seconds, got {at_cost:g}")
    axis = cost.value if cost is not None else None
    with _read_only_store(tracking_uri, workdir) as (uri, client):
        if across:
            _print_across(uri, suite, optimizee, fmt, client, axis, at_cost)
        elif at_cost is not None:
            _print_at_cost(uri, suite, optimizee, fmt, client, at_cost, axis or "cpu")
        else:
            _print_leaderboard(uri, suite, optimizee, fmt, client, wide=wide)


@app.command("report")
@_guarded
def report_cmd(
    suite: str = typer.Argument(..., help="Suite name (its MLflow experiment)."),
    out: Path = typer.Option(
        None, "--out", help="Folder for index.html and its PNGs (default: <workdir>/reports/<suite>)."
    ),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
) -> None:
    """Write one HTML page (PNGs beside it) of a suite's latest run: leaderboard, loss curves, profile,
    meta-training, Pareto front, teacher vs equation, meta-tuning; also logged to the suite run (report/)."""
    from harness.report.html import ARTIFACT_DIR, build_report

    folder = out if out is not None else workdir / "reports" / suite
    with _read_only_store(tracking_uri, workdir) as (uri, client):
        result = build_report(client, suite, folder, log=_log)
    console.print(
        f"report: {result.index} ({len(result.plots)} plot(s)); logged to run {result.suite_run_id} "
        f"under {ARTIFACT_DIR}/ in {uri}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _print_at_cost(
    uri: str,
    suite: str | None,
    optimizee: str | None,
    fmt: Format,
    client: MlflowClient,
    budget: float,
    axis: str,
) -> None:
    from harness import tracking
    from harness.jsonio import dumps
    from harness.report import at_cost

    records = tracking.leaderboard_records(client, suite, optimizee, histories=(at_cost.CURVE,))
    if not records:
        _fail(f"no finished evaluate trials{f' for suite {suite!r}' if suite else ''} in {uri}")
    rows = at_cost.rank_at_cost(records, budget, axis)
    if fmt is Format.json:
        sys.stdout.write(dumps(rows) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(at_cost.to_frame(rows).to_csv(index=False))
    elif fmt is Format.markdown:
        sys.stdout.write(at_cost.to_frame(rows).to_markdown(index=False, floatfmt=".4g") + "\n")
    else:
        for t in at_cost.to_rich_tables(rows):
            console.print(t)


def _print_across(
    uri: str,
    suite: str | None,
    optimizee: str | None,
    fmt: Format,
    client: MlflowClient,
    axis: str | None = None,
    budget: float | None = None,
) -> None:
    import pandas as pd
    from rich.table import Table

    from harness import tracking
    from harness.jsonio import dumps
    from harness.report import across, at_cost

    histories = (at_cost.CURVE,) if budget is not None else ()
    records = tracking.leaderboard_records(client, suite, optimizee, curves=True, histories=histories)
    if not records:
        _fail(f"no finished evaluate trials{f' for suite {suite!r}' if suite else ''} in {uri}")
    summary, per_task = across.from_records(records, cost=axis)
    cost_rows = at_cost.rank_at_cost(records, budget, axis or "cpu") if budget is not None else []
    at_budget = at_cost.across_at_cost(cost_rows) if budget is not None else []
    if fmt is Format.json:
        extra = {
            "at_cost": {"axis": axis or "cpu", "budget_s": budget, "summary": at_budget, "rows": cost_rows}
        }
        sys.stdout.write(dumps({"summary": summary, "tasks": per_task, **(extra if budget else {})}) + "\n")
        return
    if fmt is Format.csv:
        sys.stdout.write(pd.DataFrame(at_budget if budget is not None else summary).to_csv(index=False))
        return
    if fmt is Format.markdown:
        for part in (summary, at_budget) if budget is not None else (summary,):
            sys.stdout.write(pd.DataFrame(part).to_markdown(index=False, floatfmt=".3g") + "\n\n")
        return
    unit = f"{axis}-seconds" if axis else "steps"
    table = Table(
        title=f"across {len(per_task)} task(s) (optimizee · horizon): speedup over tuned Adam, targets, "
        f"profile rho(tau) (times in {unit})"
    )
    cols = list(summary[0]) if summary else []
    for c in cols:
        table.add_column(c, justify="left" if c == "optimizer" else "right")
    for r in summary:
        table.add_row(*[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    console.print(table)
    for task, scores in per_task.items():
        t = Table(
            title=f"{task}: target {scores[0]['target']:.4g} (best baseline's final loss)" if scores else task
        )
        for c in ("optimizer", "final", "speedup vs Adam", "time to target"):
            t.add_column(c, justify="left" if c == "optimizer" else "right")
        for sc in sorted(scores, key=lambda s: s["time_to_target"]):
            sp = sc.get("speedup_vs_adam", float("nan"))
            t.add_row(
                sc["optimizer"],
                f"{sc['final']:.4g}",
                (">= " if sc.get("speedup_bound") else "") + f"{sp:.3g}",
                f"{sc['time_to_target']:.4g}" if sc["time_to_target"] != float("inf") else "never",
            )
        console.print(t)
    if budget is not None:
        b = Table(
            title=f"across tasks at {budget:g} {axis or 'cpu'}-seconds per trial: ranks by {at_cost.CURVE} "
            "(rank pct: 0 best, 1 last; unranked where a seed has no value at the budget)"
        )
        for c in ("optimizer", "tasks", "ranked", "wins", "mean rank", "mean rank pct"):
            b.add_column(c, justify="left" if c == "optimizer" else "right")
        for r in at_budget:
            b.add_row(
                r["optimizer"],
                str(r["tasks"]),
                str(r["ranked"]),
                str(r["wins"]),
                f"{r['mean_rank']:.3g}",
                f"{r['mean_rank_pct']:.2f}",
            )
        console.print(b)


def _read_only_store(tracking_uri: str | None, workdir: Path) -> Any:
    """The store's URI and a client, for commands that only read it
    (:func:`harness.tracking.store.read_only_store`)."""
    from harness.tracking.store import read_only_store

    return read_only_store(tracking_uri, workdir)


def _print_leaderboard(
    uri: str,
    suite: str | None,
    optimizee: str | None,
    fmt: Format,
    client: MlflowClient | None = None,
    wide: bool = False,
) -> None:
    from harness import tracking
    from harness.report import leaderboard as report

    client = client or tracking.init_tracking(uri)
    stats: dict[str, int] = {}
    rows = report.aggregate(tracking.leaderboard_records(client, suite, optimizee, stats=stats))
    if stats.get("duplicates"):
        err_console.print(
            f"warning: {stats['duplicates']} duplicate trial record(s) in this store were counted once "
            "(a store written by an older version after a crash)",
            highlight=False,
            markup=False,
        )
    if not rows:
        what = f" for suite {suite!r}" if suite else ""
        _fail(f"no finished evaluate trials{what} in {uri}")
    if fmt is Format.json:
        sys.stdout.write(report.to_json(rows) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(report.to_csv(rows))
    elif fmt is Format.markdown:
        sys.stdout.write(report.to_markdown(rows))
    else:
        for t in report.to_rich_tables(rows, width=console.width, wide=wide):
            # --wide: lines as long as the table needs (the terminal wraps them), never squeezed
            console.print(t, width=10_000 if wide else None, soft_wrap=wide)


@app.command("distill-summary")
@_guarded
def distill_summary_cmd(
    suite: str = typer.Option(None, "--suite", help="Only this suite."),
    fmt: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
) -> None:
    """One row per distilled teacher (the paper's Table 3): chosen equation, R², TPF, MC, complexity."""
    import pandas as pd
    from rich.table import Table

    from harness import tracking
    from harness.jsonio import dumps

    with _read_only_store(tracking_uri, workdir) as (uri, client):
        rows = tracking.distill_records(client, suite)
    if not rows:
        _fail(f"no finished distill stages{f' for suite {suite!r}' if suite else ''} in {uri}")
    if fmt is Format.json:
        sys.stdout.write(dumps(rows) + "\n")
        return
    frame = pd.DataFrame(rows)
    if fmt is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
        return
    if fmt is Format.markdown:
        sys.stdout.write(frame.to_markdown(index=False, floatfmt=".3g") + "\n")
        return
    cols = ["suite", "stage", "source", "r2_val", "tpf", "mc", "complexity", "complexity_scaled"]
    cols += ["front_size", "input_dependent_fraction", "learned", "equation"]
    table = Table(title="distilled rules (Table 3)")
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    console.print(table)


equation_app = typer.Typer(no_args_is_help=True, help="Inspect equation files.")
app.add_typer(equation_app, name="equation")


@equation_app.command("show")
@_guarded
def equation_show(
    file: Path = typer.Argument(..., help="An equation JSON file (or a Pareto-front JSON: every equation)."),
    dataset: Path = typer.Option(
        None, "--dataset", help="A collect-stage dataset.npz to measure R² and TPF on."
    ),
    latex: bool = typer.Option(False, "--latex", help="Also print LaTeX."),
) -> None:
    """Print an equation with its complexity, features, lags, TPF and fit (parsed safely, never eval'd)."""
    from harness.jsonio import loads_json, read_text
    from harness.symbolic.lang import Equation, EquationParseError
    from harness.symbolic.sr.base import ParetoFront

    try:
        data = loads_json(read_text(file, "equation", EquationParseError), "equation", EquationParseError)
        if isinstance(data, dict) and data.get("format") == "symbolic-l2o/pareto-front":
            eqs = list(ParetoFront.from_json(data).equations)
        else:
            eqs = [Equation.from_json(data)]
    except EquationParseError as err:
        raise InputError(f"{file} is not a valid equation file: {err}") from err
    ds = None
    if dataset is not None:
        from harness.stages.collect import SRDataset

        ds = SRDataset.load(dataset)
    for eq in eqs:
        console.print(terminal_safe(_describe_equation(eq, ds, latex)), highlight=False, markup=False)


def _describe_equation(eq: Equation, ds: SRDataset | None, latex: bool) -> str:
    from harness.symbolic.metrics import r2, tpf

    lines = [f"update = {eq}", f"  complexity: {eq.complexity}   constants: {eq.n_constants}"]
    lags = eq.lags_used()
    lines.append(
        "  features:   "
        + (", ".join(f"{f} (lags {', '.join(map(str, ls))})" for f, ls in lags.items()) or "none")
    )
    metrics = dict(eq.metrics)
    if ds is not None:
        raw_val = ds.raw("val") if hasattr(ds, "raw") else None
        if raw_val is not None:
            X, y = raw_val
            metrics["r2_dataset"] = r2(y, eq.evaluate(X, ds.names))
            t = tpf(eq, X, ds.names)
            metrics["tpf"] = t.overall
            for f, v in t.per_feature.items():
                metrics[f"tpf_{f}"] = v
    if metrics:
        lines.append(
            "  metrics:    " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if v is not None)
        )
    prov = eq.provenance
    if prov:
        keys = [k for k in ("backend", "seed", "source", "max_complexity", "method") if k in prov]
        if keys:
            lines.append("  provenance: " + ", ".join(f"{k}={prov[k]}" for k in keys))
    if latex:
        lines.append(f"  latex:      {eq.latex()}")
    return "\n".join(lines)


@app.command("list")
@_guarded
def list_cmd(
    kind: Kind = typer.Argument(
        None,
        help="optimizees, teachers, sr-backends or stages (default: all of them). Listing sr-backends "
        "imports each backend to say whether it can run here (seconds); the others import no plug-in.",
    ),
) -> None:
    """List registered plug-ins (built-ins and entry points)."""
    from harness.registry import OPTIMIZEES, SR_BACKENDS, STAGES, TEACHERS

    regs = {
        Kind.optimizees: OPTIMIZEES,
        Kind.teachers: TEACHERS,
        Kind.sr_backends: SR_BACKENDS,
        Kind.stages: STAGES,
    }
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    for k in [kind] if kind is not None else list(Kind):
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column("name", no_wrap=True, min_width=14)
        table.add_column("what", overflow="fold")
        reg = regs[k]
        for name in reg.names():
            extra = ""
            try:
                doc = reg.describe(name)
                if k is Kind.sr_backends:  # whether it can run here needs the backend itself
                    ok, why = SR_BACKENDS.get(name)().available()
                    extra = " [available]" if ok else f" [unavailable: {why}]"
            except Exception as err:  # noqa: BLE001 - a broken plug-in must not break listing
                doc, extra = "", f" [unavailable: {type(err).__name__}: {err}]"
            table.add_row(Text(name), Text(summary_line(doc) + extra))  # Text: "[pysr]" is not markup
        if kind is None:  # every kind: a heading each, its entries indented under it
            console.print(f"{k.value}:", highlight=False, markup=False)
        console.print(Padding(table, (0, 0, 0, 2 if kind is None else 0)), highlight=False)


def summary_line(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line, without reST markup (``x``)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = para.replace("``", "").replace(":class:", "").replace(":func:", "").replace("`", "")
    # a sentence ends at ". " before a capital, not after an abbreviation ("Sec. 4", "e.g. X")
    end = re.search(r"(?<!\bSec)(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z(])", text)
    return text if end is None else text[: end.start() + 1]


def main() -> None:
    """The ``sl2o`` command. ``--debug`` works anywhere on the line (typer takes it only before the command)."""
    if "--debug" in sys.argv[2:]:
        sys.argv.remove("--debug")
        sys.argv.insert(1, "--debug")
    app()


if __name__ == "__main__":
    main()
