"""End to end: table4-cpu.yaml's route, shrunk to seconds (the same stages and kinds, tiny budgets), runs
through Ray Tune and MLflow, and benchmarks/perf/transfer.py reads its outcome: RP(extra) distilled into
eq. 6 over {m_hat, g_hat, eta} and by Operon, meta-fine-tuned on ResNet-18/digits16, then compared with the
grid at both horizons."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, run_suite
from harness.stages.outputs import equations_from_stage
from harness.symbolic.lang import Equation
from search_spaces.safe_yaml import read_yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TINY_CNN = {
    "max_train": 48,
    "max_test": 32,
    "batch_size": 16,
    "bn_calibration_batches": 1,
    "test_batch_size": 32,
}


def _shrink(suite: dict[str, Any]) -> dict[str, Any]:
    """table4-cpu with every budget cut to seconds; structure, kinds and stage names unchanged."""
    suite["name"] = "table4-tiny"
    for st in suite["stages"]:
        for o in st.get("optimizees", []) + ([st["optimizee"]] if "optimizee" in st else []):
            if o["name"] == "cnn":
                o["kwargs"] = {**o["kwargs"], **TINY_CNN}
                o["steps"] = [4, 8] if isinstance(o["steps"], list) else 6
            elif o["name"] == "mlp":
                o["kwargs"] = {**o["kwargs"], "hidden": [8], "max_train": 256}
                o["steps"] = 30 if st["kind"] == "collect" else o.get("steps")
        if st["kind"] == "evaluate":
            st["seeds"] = [100]
            if st["name"] == "grid":
                st["optimizers"] = [
                    {"family": "sgd", "lr": 0.05, "momentum": 0.9},
                    {"family": "adam", "lr": 0.01},
                ]
            if st["name"] == "own-task":
                st["optimizees"][0]["steps"] = 10
        elif st["kind"] == "meta_train":
            st["teachers"][0]["kwargs"] = {"hidden": 4}
            st["settings"].update(
                episode_length=10, unroll=5, time_budget_s=None, episodes=2, eval_every=1, eval_steps=10
            )
        elif st["kind"] == "collect":
            st.update(n_samples=200, steps=30, seeds_per_optimizee=1)
        elif st["kind"] == "distill" and "operon" in st["backends"]:
            st.update(seeds=[0])
            st["settings"].update(population_size=50, iterations=5, max_time_s=10)
        elif st["kind"] == "meta_tune":
            st["settings"].update(unroll=3, eval_seeds=[0])
    return suite


def test_table4_route_tiny(ray_session, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "transfer_e2e", ROOT / "benchmarks" / "perf" / "transfer.py"
    )
    transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transfer)
    suite = load_suite_dict(
        _shrink(read_yaml(ROOT / "benchmarks" / "suites" / "table4-cpu.yaml")), "tiny.yaml"
    )
    address = ray_session.get_runtime_context().gcs_address
    opts = RunOptions(
        address=address, tracking_uri=f"sqlite:///{tmp_path}/m.db", workdir=str(tmp_path), log=lambda s: None
    )
    outcome = run_suite(suite, opts)
    assert all(st.errors == 0 for st in outcome.stages.values())

    # the distilled eq. 6 reads eta, with the teacher's meta-trained parameters, and has no drift term
    (_, eq6_path), *_ = equations_from_stage(outcome.stages["eq6"])
    eq = Equation.load(eq6_path)
    assert {"eta"} <= set(eq.features_used()) and len(eq.provenance["feature_spec"]["eta_params"]) == 6
    # meta-fine-tuning moved eta's parameters along with W and gamma
    (_, tuned_path), *_ = equations_from_stage(outcome.stages["tune-eq6"])
    tuned = Equation.load(tuned_path)
    trial = outcome.stages["tune-eq6"].trials[0]
    if trial.metrics.get("kept_tuned", 0.0):
        assert tuned.provenance["feature_spec"]["eta_params"] != eq.provenance["feature_spec"]["eta_params"]

    # the rules are chosen on real validation runs (tuning seeds, validation split) at both horizons, cached
    cache = tmp_path / "validation.json"
    candidates = transfer.rule_candidates(suite, outcome, cache, lambda _: None)
    assert cache.exists() and transfer.rule_candidates(suite, outcome, cache, _never) == candidates
    assert all(set(by_h) == {"4 steps", "8 steps"} for by_h in candidates.values())
    stage, name, text = transfer.chosen_rule(suite, outcome, candidates)
    meta_tune = {s.name for s in suite.stages if s.kind == "meta_tune"}
    assert {
        "tune-eq6",
        "tune-operon",
        "tune-eq6-cos",
        "tune-operon-cos",
        "tune-eq6-then-cos",
        "tune-operon-then-cos",
    } <= meta_tune
    assert stage in meta_tune and set(candidates) == meta_tune and stage == transfer.pick_rule(candidates)
    rules_stage: Any = suite.stage("rules")
    assert any(getattr(o, "from_stage", None) == stage and o.name == name for o in rules_stage.optimizers)
    rules = transfer._split(transfer._records(outcome.stages["rules"]), name)
    rows = transfer.compare(transfer._records(outcome.stages["grid"]), rules, text)
    assert [r["horizon"] for r in rows] == ["4 steps", "8 steps"]
    for row in rows:
        assert math.isfinite(row["symbolic_loss"]) and row["best_grid_config"].startswith(("sgd", "adam"))
        assert 0.0 <= row["symbolic_test_acc"] <= 1.0
    assert set(transfer.own_task_ratios(outcome)) == {"eq6-distilled", "operon-distilled"}


def _never(line: str) -> None:
    raise AssertionError(f"a cached validation ran again: {line}")
