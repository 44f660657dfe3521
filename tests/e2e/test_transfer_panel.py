"""End to end: the transfer panel's quick variant (benchmarks/perf/transfer_panel.py --quick) runs through Ray
Tune and MLflow: one teacher and one distillation, four Optuna searches (hpo stages) per target, the choices and
the grid on held-out seeds at two horizons, and the script's rows from the outcome."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from harness.engine.runner import RunOptions, run_suite
from harness.stages.outputs import tag
from harness.training.labels import optimizer_label

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "target",
    "horizon",
    "ratio_vs_grid",
    "ratio_vs_tuned",
    "rule_test_acc",
    "best_test_acc",
    "tuning_trainings_rule",
    "tuning_trainings_baseline",
    "equation",
    "features",
}


def test_quick_panel(ray_session, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "panel_e2e", ROOT / "benchmarks" / "perf" / "transfer_panel.py"
    )
    panel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(panel)
    suite = panel.load_panel(panel.SUITE, quick=True)
    opts = RunOptions(
        address=ray_session.get_runtime_context().gcs_address,
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        workdir=str(tmp_path),
        log=lambda s: None,
    )
    outcome = run_suite(suite, opts)
    assert all(st.errors == 0 for st in outcome.stages.values())

    for target in panel.QUICK_TARGETS:
        for method in (*panel.RULES, *panel.BASELINES):
            st = outcome.stages[f"{method}.{target}"]
            assert len(st.trials) == panel.QUICK_TRIALS and st.extra["chosen"]
            # every proposal trained on the validation split at the tuning horizon; the chosen one is the best
            objectives = [t.metrics["objective"] for t in st.trials]
            assert st.extra["metrics"]["best_objective"] == min(objectives)
            assert st.extra["metrics"]["tuning_trainings"] == panel.QUICK_TRIALS * 2
        # the evaluate stage ran each search's choice, under the method's name
        labels = {t.tags[tag("optimizer")] for t in outcome.stages[f"rules.{target}"].trials}
        for method in (*panel.RULES, *panel.BASELINES):
            chosen = outcome.stages[f"{method}.{target}"].extra["chosen"]
            assert optimizer_label({**chosen, "name": f"{method}-tuned"}) in labels

    rows, losses = panel.panel_rows(suite, outcome)
    assert len(rows) == 2 * len(panel.QUICK_TARGETS) and all(KEYS <= set(r) for r in rows)
    for row in rows:
        assert math.isfinite(row["ratio_vs_grid"]) and math.isfinite(row["ratio_vs_tuned"])
        assert row["tuning_trainings_rule"] == row["tuning_trainings_baseline"] == 2 * panel.QUICK_TRIALS * 2
        assert row["features"] and row["equation"]
        has_acc = row["target"] != "autoencoder-digits"
        assert (row["rule_test_acc"] is not None) == has_acc
    assert len(losses) == len(rows) and panel.profile_lines(losses)
