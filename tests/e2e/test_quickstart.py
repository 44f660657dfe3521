"""End to end: the quickstart suite (teacher -> collect -> distill -> meta-tune -> evaluate) at a tiny size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.report import leaderboard as report
from harness.stages.outputs import chosen_equation_text, equations_from_stage
from harness.symbolic.lang import Equation
from harness.symbolic.sr.base import ParetoFront

pytestmark = pytest.mark.e2e
QUICKSTART = Path(__file__).resolve().parents[2] / "benchmarks" / "suites" / "quickstart.yaml"


def tiny_quickstart() -> dict:
    """The shipped quickstart with every budget cut down (same stages, same wiring)."""
    data = yaml.safe_load(QUICKSTART.read_text())
    st = {s["name"]: s for s in data["stages"]}
    st["teacher"]["settings"].update(
        {"episode_length": 40, "episodes": 3, "time_budget_s": None, "eval_every": 3}
    )
    st["teacher"]["settings"]["val_seeds"] = [900]
    st["data"].update({"n_samples": 300, "steps": 40, "seeds_per_optimizee": 1})
    st["distill"].update({"seeds": [0], "max_complexities": [10]})
    st["distill"]["settings"].update({"population_size": 50, "iterations": 5, "max_time_s": 10})
    st["tune"]["optimizee"]["steps"] = 30
    st["tune"]["settings"].update({"n_trials": 4, "seeds": [0], "eval_seeds": [50]})
    st["eval"]["optimizees"][0]["steps"] = 30
    st["eval"]["seeds"] = [100]
    st["eval"]["optimizers"][-1] = {"family": "adam", "lr": 0.01}
    return data


def test_quickstart_pipeline_end_to_end(ray_session, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    out = run_suite(
        load_suite_dict(tiny_quickstart()),
        RunOptions(tracking_uri=uri, workdir=str(tmp_path), log=lambda s: None),
    )
    assert all(o.errors == 0 for o in out.stages.values()), {k: o.errors for k, o in out.stages.items()}

    # the distill stage merged its trials' fronts and chose one equation, logged on the stage run
    distill = out.stages["distill"]
    ((label, chosen),) = equations_from_stage(distill)
    eq = Equation.load(chosen)
    assert eq.provenance["backend"] == "operon" and "feature_spec" in eq.provenance
    client = tracking.init_tracking(uri)
    stage_files = {a.path for a in client.list_artifacts(distill.run_id)}
    assert {"front.json", "chosen.json", "pareto.png"} <= stage_files
    assert len(ParetoFront.load(Path(chosen).with_name("front.json")).equations) >= 1

    # the tuned equation is what the evaluate stage ran; teacher, symbolic and baseline rows are ranked
    tuned = out.stages["tune"].trials[0]
    assert (tuned.artifacts / "equation.json").exists() and "val_loss_before" in tuned.metrics
    rows = report.aggregate(tracking.leaderboard_records(client, "quickstart"))
    assert {r["family"] for r in rows} == {"teacher", "symbolic", "adam"}
    assert {r["optimizer"] for r in rows if r["family"] == "symbolic"} == {
        "symbolic:distilled",
        "symbolic:tuned",
    }
    assert "chosen equation (meta_tune stage 'tune')" in chosen_equation_text(out)
