"""End to end: a tiny full suite (curriculum meta-training, collect, linear distill, Optuna meta-tune, evaluate
on two optimizees) then ``sl2o report``: one HTML page with every PNG beside it, also on the suite run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import tracking
from harness.cli import app
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite

pytestmark = pytest.mark.e2e


def tiny_suite() -> dict:
    return {
        "name": "report-tiny",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teacher",
                "teachers": [{"name": "rp", "kwargs": {"hidden": 4, "out_scale": 0.1}}],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {
                    "episodes": 6,
                    "episode_length": 20,
                    "unroll": 10,
                    "eval_every": 2,
                    "curriculum": True,
                    "cl_lengths": [20, 40],
                },
            },
            {
                "kind": "collect",
                "name": "data",
                "source": {"from_stage": "teacher"},
                "optimizees": [{"name": "quadratic_cos"}],
                "lags": 3,
                "n_samples": 300,
                "steps": 40,
            },
            {"kind": "distill", "name": "distill", "from_stage": "data", "backends": ["linear"]},
            {
                "kind": "meta_tune",
                "name": "tune",
                "from_stage": "distill",
                "optimizee": {"name": "quadratic_cos", "steps": 30},
                "method": "optuna",
                "settings": {"n_trials": 4, "eval_steps": 30, "seeds": [0]},
            },
            {
                "kind": "evaluate",
                "name": "eval",
                "optimizees": [
                    {"name": "quadratic_cos", "steps": 50},
                    {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [8]}, "steps": 50},
                ],
                "optimizers": [
                    {"family": "teacher", "from_stage": "teacher"},
                    {"family": "symbolic", "from_stage": "distill", "name": "distilled"},
                    {"family": "symbolic", "from_stage": "tune", "name": "tuned"},
                    {"grid": "smoke"},
                ],
                "seeds": [0, 1, 2],
            },
        ],
    }


def test_report_writes_a_page_with_every_plot_and_logs_it(
    ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI: put it back as it was when the test ends
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    out = run_suite(
        load_suite_dict(tiny_suite()), RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None)
    )
    assert all(o.errors == 0 for o in out.stages.values()), {k: o.errors for k, o in out.stages.items()}
    suite_seconds = time.monotonic() - start

    folder = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        ["report", "report-tiny", "--tracking-uri", uri, "--workdir", str(tmp_path), "--out", str(folder)],
    )
    assert res.exit_code == 0, res.output
    index = folder / "index.html"
    assert index.is_file() and index.stat().st_size > 0
    page = index.read_text()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    # every kind of plot is there: loss curves, meta-training, Pareto, teacher vs equation, meta-tune; the
    # profile is drawn over 3 or more tasks, and the page says why it is not here (2 tasks)
    assert not any(p.startswith("performance_profile") for p in pngs)
    assert "performance profile: drawn over 3 or more tasks" in page and "this suite has 2" in page
    for prefix in (
        "loss_curves",
        "meta_train_",
        "pareto_",
        "update_rule_",
        "meta_tune_",
        "timeline",
    ):
        assert any(p.startswith(prefix) for p in pngs), (prefix, pngs)
    for name in pngs:
        assert (folder / name).stat().st_size > 0
        assert f'src="{name}"' in page, name
    assert set(re.findall(r'src="([^"]+)"', page)) == set(pngs)  # nothing referenced that is not beside it
    assert "<table" in page and "verdict" in page and "rho@1" in page
    assert "http://" not in page and "https://" not in page  # self-contained: no external CSS/JS

    client = tracking.init_tracking(uri)
    logged = {a.path for a in client.list_artifacts(out.run_id, "report")}
    assert {f"report/{n}" for n in [*pngs, "index.html"]} <= logged
    assert suite_seconds < 120, f"the tiny suite took {suite_seconds:.0f}s"
