"""The ``sl2o`` command: validate and run suites, list plug-ins, show the leaderboard."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from harness.config import Suite
    from harness.runner import StageFailed
    from harness.stages.collect import SRDataset
    from harness.stages.outputs import SuiteOutcome
    from harness.symbolic.equation import Equation

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="symbolic-l2o: learn, distill and benchmark optimizers."
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<workdir>/mlflow.db)."
WORKDIR_HELP = "Directory for Ray Tune state, the default MLflow DB and downloaded artifacts."


class Kind(str, Enum):
    optimizees = "optimizees"
    teachers = "teachers"
    sr_backends = "sr-backends"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _fail(msg: str, code: int = 2) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def validate(file: Path = typer.Argument(..., help="Suite YAML file.")) -> None:
    """Check a suite file; exit non-zero naming each wrong YAML path."""
    from harness.config import SuiteError, load_suite

    try:
        suite = load_suite(file)
    except SuiteError as err:
        _fail(str(err))
    n = len(suite.stages)
    console.print(
        f"{file}: OK (suite {suite.name!r}, {n} stage(s): {', '.join(s.name for s in suite.stages)})"
    )


@app.command()
def run(
    file: Path = typer.Argument(..., help="Suite YAML file."),
    address: str = typer.Option(
        None, "--address", help="Ray cluster address (default: $RAY_ADDRESS or local Ray)."
    ),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
    leaderboard: bool = typer.Option(
        True, "--leaderboard/--no-leaderboard", help="Print the leaderboard at the end."
    ),
    fresh: list[str] = typer.Option(
        [], "--fresh", help="Rerun this stage whole, discarding its earlier runs (repeatable)."
    ),
) -> None:
    """Run a suite (rerunning the same command resumes it, reruns errored trials, reuses finished stages)."""
    import signal

    from harness.config import SuiteError, load_suite
    from harness.runner import RunOptions, StageFailed, StageInputError, SuiteInterrupted, run_suite

    try:
        suite = load_suite(file)
    except SuiteError as err:
        _fail(str(err))
    if tracking_uri is None and "MLFLOW_TRACKING_URI" not in __import__("os").environ:
        workdir.mkdir(parents=True, exist_ok=True)
    opts = RunOptions(
        address=address, tracking_uri=tracking_uri, workdir=str(workdir), log=_log, fresh=frozenset(fresh)
    )
    # SIGTERM (a scheduler's or `kill`'s stop) behaves like Ctrl-C: Tune stops its trials and saves state
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
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
    _print_summary(suite, outcome)
    if leaderboard and any(s.kind == "evaluate" for s in suite.stages):
        _print_leaderboard(outcome.tracking_uri, suite.name, None, Format.table)
    equation_stages = [s.kind for s in suite.stages if s.kind in ("distill", "meta_tune")]
    if equation_stages and equation_stages[-1] == "meta_tune":  # a distill stage's summary shows its rules
        _print_equations(outcome)


def _print_failure(suite: Suite, failed: StageFailed) -> None:
    """What ran, which trials failed (one line each, with the log), and how to go on."""
    from harness.registry import STAGES

    completed = failed.outcome.extra.get("completed_stages", {})
    console.print("summary:", highlight=False)
    for name, st in completed.items():
        for line in STAGES.get(st.kind).summarize(suite.stage(name), st):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    out = failed.outcome
    err_console.print(
        f"error: stage {out.name!r} is not finished: {len(failed.failures)} trial(s) errored, "
        f"{len(out.trials)} ok; later stages did not run",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for f in failed.failures:
        err_console.print(
            f"  {f.label}: {f.error}\n    log: {f.log}", highlight=False, markup=False, soft_wrap=True
        )
    err_console.print(
        "Fix the cause and rerun the same command: only the errored and missing trials run again "
        f"(--fresh {out.name} reruns the stage whole).",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _log(msg: str) -> None:
    console.print(msg, highlight=False, soft_wrap=True, markup=False)


def _print_summary(suite: Suite, outcome: SuiteOutcome) -> None:
    """What each stage produced (its kind's summary), in suite order."""
    from harness.registry import STAGES

    console.print("summary:", highlight=False)
    for name, st in outcome.stages.items():
        for line in STAGES.get(st.kind).summarize(suite.stage(name), st):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


def _print_equations(outcome: SuiteOutcome) -> None:
    """Print the chosen equation of a suite's last distill/meta_tune stage, if any."""
    from harness.stages.outputs import chosen_equation_text

    text = chosen_equation_text(outcome)
    if text:
        console.print(text, highlight=False)


@app.command("leaderboard")
def leaderboard_cmd(
    suite: str = typer.Option(None, "--suite", help="Only this suite."),
    optimizee: str = typer.Option(None, "--optimizee", help="Only this optimizee (label or prefix)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
) -> None:
    """Ranked optimizers per optimizee, seeds aggregated (mean, std, n), diverged last."""
    from harness.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, workdir)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        _fail(f"no MLflow database at {uri[len('sqlite:///') :]}; run a suite first or pass --tracking-uri")
    _print_leaderboard(uri, suite, optimizee, fmt)


def _print_leaderboard(uri: str, suite: str | None, optimizee: str | None, fmt: Format) -> None:
    from harness import report, tracking

    client = tracking.init_tracking(uri)
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
    else:
        for t in report.to_rich_tables(rows):
            console.print(t)


@app.command("distill-summary")
def distill_summary_cmd(
    suite: str = typer.Option(None, "--suite", help="Only this suite."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    workdir: Path = typer.Option(Path("sl2o_runs"), "--workdir", help=WORKDIR_HELP),
) -> None:
    """One row per distilled teacher (the paper's Table 3): chosen equation, R², TPF, MC, complexity."""
    import pandas as pd
    from rich.table import Table

    from harness import tracking
    from harness.jsonio import dumps

    uri = tracking.resolve_tracking_uri(tracking_uri, workdir)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        _fail(f"no MLflow database at {uri[len('sqlite:///') :]}; run a suite first or pass --tracking-uri")
    rows = tracking.distill_records(tracking.init_tracking(uri), suite)
    if not rows:
        _fail(f"no finished distill stages{f' for suite {suite!r}' if suite else ''} in {uri}")
    if fmt is Format.json:
        sys.stdout.write(dumps(rows) + "\n")
        return
    frame = pd.DataFrame(rows)
    if fmt is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
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
def equation_show(
    file: Path = typer.Argument(..., help="An equation JSON file (or a Pareto-front JSON: every equation)."),
    dataset: Path = typer.Option(
        None, "--dataset", help="A collect-stage dataset.npz to measure R² and TPF on."
    ),
    latex: bool = typer.Option(False, "--latex", help="Also print LaTeX."),
) -> None:
    """Print an equation with its complexity, features, lags, TPF and fit (parsed safely, never eval'd)."""
    import json as _json

    from harness.symbolic.equation import Equation, EquationParseError
    from harness.symbolic.sr.base import ParetoFront

    try:
        data = _json.loads(file.read_text())
        if isinstance(data, dict) and data.get("format") == "symbolic-l2o/pareto-front":
            eqs = list(ParetoFront.from_json(data).equations)
        else:
            eqs = [Equation.from_json(data)]
    except FileNotFoundError:
        _fail(f"{file} does not exist")
    except (ValueError, EquationParseError, KeyError, TypeError) as err:
        _fail(f"{file} is not a valid equation file: {err}")
    ds = None
    if dataset is not None:
        from harness.stages.collect import SRDataset

        ds = SRDataset.load(dataset)
    for eq in eqs:
        console.print(_describe_equation(eq, ds, latex), highlight=False, markup=False)


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
def list_cmd(kind: Kind = typer.Argument(..., help="optimizees, teachers or sr-backends.")) -> None:
    """List registered plug-ins (built-ins and entry points)."""
    from harness.registry import OPTIMIZEES, SR_BACKENDS, TEACHERS

    reg = {Kind.optimizees: OPTIMIZEES, Kind.teachers: TEACHERS, Kind.sr_backends: SR_BACKENDS}[kind]
    for name, obj in reg.items():
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        extra = ""
        if kind is Kind.sr_backends:
            try:
                ok, why = obj().available()
                extra = " [available]" if ok else f" [unavailable: {why}]"
            except Exception as err:  # noqa: BLE001 - a broken plug-in must not break listing
                extra = f" [unavailable: {err}]"
        console.print(f"{name:16s} {doc[0] if doc else ''}{extra}", highlight=False, markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
