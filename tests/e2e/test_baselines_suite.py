"""End to end: suites through Ray Tune and a fresh MLflow DB, the leaderboard, divergence, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import tracking
from harness.cli import app
from harness.config.suite import load_suite, load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.report import leaderboard as report
from harness.training.labels import optimizer_label
from search_spaces import load_grid

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "benchmarks" / "suites" / "baselines-smoke.yaml"


def test_smoke_suite_and_leaderboard(ray_session, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    logs: list[str] = []
    out = run_suite(load_suite(SMOKE), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=logs.append))
    stage = out.stages["baselines"]
    grid = load_grid("smoke")
    assert stage.errors == 0 and len(stage.trials) == 2 * len(grid) * 2
    assert any("trials done" in line for line in logs)

    res = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    optimizees = {r["optimizee"] for r in rows}
    assert len(optimizees) == 2 and "quadratic_cos" in optimizees
    for optimizee in {r["optimizee"] for r in rows}:
        mine = [r for r in rows if r["optimizee"] == optimizee]
        assert sorted(r["optimizer"] for r in mine) == sorted(optimizer_label(g) for g in grid)
        assert {r["family"] for r in mine} == {"sgd", "adam"}
        assert all(r["n"] == 2 and r["seeds"] == ["0", "1"] for r in mine)
        assert [r["rank"] for r in mine] == list(range(1, len(mine) + 1))
        means = [r["mean"] for r in mine if r["mean"] is not None]
        assert means == sorted(means)

    # on a real terminal (tmux) at 80 and 100 columns: every name whole, no line wider than the terminal
    for width in (80, 100):
        screen = _leaderboard_in_tmux(uri, width, tmp_path)
        assert screen.count("baselines-smoke / ") >= 2, screen
        assert all(len(line) <= width for line in screen.splitlines()), screen  # -J joins wrapped lines
        for g in grid:
            assert optimizer_label(g) in screen, (optimizer_label(g), screen)

    # the loss curve and final metrics landed in MLflow under suite > stage > trial runs
    client = tracking.init_tracking(uri)
    recs = tracking.leaderboard_records(client, "baselines-smoke")
    run = client.get_run(recs[0]["run_id"])
    hist = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(hist) >= 5 and hist[0].step == 1
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["sl2o.kind"] == "stage"
    assert client.get_run(parent.data.tags["mlflow.parentRunId"]).data.tags["sl2o.kind"] == "suite"

    # a rerun reuses the finished stage instead of training again
    logs.clear()
    again = run_suite(load_suite(SMOKE), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=logs.append))
    assert again.stages["baselines"].reused and any("reusing finished stage" in line for line in logs)


def _leaderboard_in_tmux(uri: str, width: int, tmp_path: Path) -> str:
    """``sl2o leaderboard`` on a ``width``-column tmux pane (a real terminal), as the user sees it; the tmux
    server is this test's own (its own socket), stopped when the output is read."""
    import shlex
    import shutil
    import time

    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (test_report.py renders the same tables at 80/100/200 columns)")
    sock = str(tmp_path / f"tmux-{width}.sock")
    cmd = shlex.join([sys.executable, "-m", "harness.cli", "leaderboard", "--tracking-uri", uri])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TMUX")}
    subprocess.run(
        [
            tmux,
            "-S",
            sock,
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            "50",
            f"{cmd}; echo __done__; sleep 60",
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [tmux, "-S", sock, "capture-pane", "-p", "-J", "-S", "-", "-t", "0"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "__done__" in screen:
                return screen.split("__done__")[0]
            time.sleep(0.5)
        raise AssertionError(f"sl2o leaderboard did not finish in tmux within 60 s:\n{screen}")
    finally:
        subprocess.run([tmux, "-S", sock, "kill-server"], check=False)


def test_diverging_config_is_recorded_and_ranked_last(ray_session, tmp_path: Path) -> None:
    data = {
        "name": "diverge",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 200}],
                "optimizers": [{"family": "sgd", "lr": 100.0}, {"family": "adam", "lr": 0.01}],
                "seeds": [0],
            }
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    out = run_suite(
        load_suite_dict(data), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None)
    )
    assert out.stages["e"].errors == 0
    rows = report.aggregate(tracking.leaderboard_records(tracking.init_tracking(uri), "diverge"))
    assert [r["family"] for r in rows] == ["adam", "sgd"]
    assert rows[1]["diverged"] == 1
    diverged = [t for t in out.stages["e"].trials if t.tags["sl2o.status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0].metrics["diverged"] == 1.0


def test_interrupted_run_resumes_without_redoing_finished_trials(
    ray_session, tmp_path: Path, cli_run_command, run_and_interrupt
) -> None:
    data = {
        "name": "resume",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 4000}],
                "optimizers": [
                    {"family": "adam", "lr": lr} for lr in (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)
                ],
                "seeds": [0],
                "max_concurrent": 1,
            }
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = cli_run_command(data, tmp_path, uri, ray_session.get_runtime_context().gcs_address)
    client = tracking.init_tracking(uri)  # create the DB here so polling never races its migration

    def two_finished() -> list:
        exps = tracking.our_experiments(client, "resume")
        done = tracking.find_runs(
            client, [exps[0].experiment_id], "tags.`sl2o.kind` = 'trial' and attributes.status = 'FINISHED'"
        )
        return done if len(done) >= 2 else []

    finished = run_and_interrupt(cmd, tmp_path, two_finished)
    done_before = {r.data.tags["sl2o.trial_id"] for r in finished}
    assert 2 <= len(done_before) < 6

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming an interrupted stage" in rerun.stdout
    client = tracking.init_tracking(uri)
    exp = tracking.our_experiments(client, "resume")[0]
    runs = tracking.find_runs(client, [exp.experiment_id], "tags.`sl2o.kind` = 'trial'")
    by_trial: dict[str, list] = {}
    for r in runs:
        by_trial.setdefault(r.data.tags["sl2o.trial_id"], []).append(r)
    assert len(by_trial) == 6
    for tid, rs in by_trial.items():
        assert [r.info.status for r in rs].count("FINISHED") == 1, tid
        if tid in done_before:
            assert len(rs) == 1, f"finished trial {tid} was run again"
    rows = report.aggregate(tracking.leaderboard_records(client, "resume"))
    assert len(rows) == 6 and all(r["n"] == 1 for r in rows)
    os.environ.pop("RAY_ADDRESS", None)


def test_two_horizons_are_two_trials_each_and_two_leaderboards(ray_session, tmp_path: Path) -> None:
    data = {
        "name": "horizons",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": [40, 120]}],
                "optimizers": [{"family": "sgd", "lr": 0.005}, {"family": "adam", "lr": 0.01}],
                "seeds": [0, 1],
            }
        ],
    }
    uri = f"sqlite:///{tmp_path}/m.db"
    out = run_suite(
        load_suite_dict(data), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None)
    )
    assert out.stages["e"].errors == 0 and len(out.stages["e"].trials) == 2 * 2 * 2
    client = tracking.init_tracking(uri)
    recs = tracking.leaderboard_records(client, "horizons")
    assert (
        sorted((r["horizon"], r["metrics"]["steps"]) for r in recs)
        == [("120 steps", 120.0)] * 4 + [("40 steps", 40.0)] * 4
    )
    names = sorted(client.get_run(r["run_id"]).info.run_name for r in recs)
    assert sum("quadratic_cos · 40 steps · " in n for n in names) == 4, names

    res = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [(r["horizon"], r["rank"], r["n"]) for r in rows] == [
        ("40 steps", 1, 2),
        ("40 steps", 2, 2),
        ("120 steps", 1, 2),
        ("120 steps", 2, 2),
    ]
    assert all(r["verdict"] for r in rows) and {r["reference"] for r in rows} == {"adam(lr=0.01)"}
    table = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri])
    assert table.exit_code == 0, table.output
    first, second = (
        table.stdout.index("horizons / quadratic_cos · 40 steps"),
        table.stdout.index("horizons / quadratic_cos · 120 steps"),
    )
    assert first < second
    only = CliRunner().invoke(
        app, ["leaderboard", "--tracking-uri", uri, "--format", "json", "--optimizee", "quadratic_cos · 120"]
    )
    assert {r["horizon"] for r in json.loads(only.stdout)} == {"120 steps"}, only.output
    across = CliRunner().invoke(app, ["leaderboard", "--tracking-uri", uri, "--format", "json", "--across"])
    assert list(json.loads(across.stdout)["tasks"]) == [
        "horizons/quadratic_cos · 40 steps",
        "horizons/quadratic_cos · 120 steps",
    ]
    page = CliRunner().invoke(
        app, ["report", "horizons", "--tracking-uri", uri, "--out", str(tmp_path / "r")]
    )
    assert page.exit_code == 0, page.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert html.index("<h3>quadratic_cos · 40 steps ") < html.index("<h3>quadratic_cos · 120 steps ")
