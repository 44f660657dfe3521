"""What ASHA early stopping saves on an evaluate grid, and whether it keeps the grid's best config.

Runs the ``grid`` stage of ``benchmarks/suites/table4-cpu.yaml`` (the paper's 40-config SGD/Adam grid on
ResNet-18/digits16, 3 seeds, at 100 and 500 steps; about 15 minutes on 2 cores without stopping) twice, in
fresh temporary workdirs: once as is, once with ``early_stopping`` (ASHA). Each horizon runs as a stage of its
own so that its grace is a fixed share of it; the settings were picked before any result was seen: grace 20%
of the horizon (20 and 100 steps), reduction factor 3 (``--grace-fraction``, ``--reduction-factor``).
``--quick`` runs a small grid on a small model instead (a check that the script works, in a minute or two).

Prints per horizon ``budget_saved_fraction`` (training steps not run, over the full grid's), ``seconds_full``
and ``seconds_asha`` (the stage's wall time), ``best_full`` and ``best_asha`` (the leaderboard's top config of
the task) and ``same_best``; with ``--json`` the last line is ``{horizon: {...}}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness import tracking
from harness.config.specs import horizon_label
from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, init_ray, run_suite
from harness.report.leaderboard import aggregate

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "table4-cpu.yaml"
STAGE = "grid"

#: ``--quick``: the smoke grid on a small MLP on digits at two short horizons, one seed
QUICK_STAGE: dict[str, Any] = {
    "kind": "evaluate",
    "name": STAGE,
    "optimizees": [
        {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [16], "batch_size": 64}, "steps": [30, 60]}
    ],
    "optimizers": [{"grid": "smoke"}],
    "seeds": [0],
    "log_every": 5,
}


def grid_stage(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The evaluate stage to measure (as YAML data) and the suite-level fields it runs under."""
    if quick:
        return copy.deepcopy(QUICK_STAGE), {"resources": {"cpus_per_trial": 1}}
    data = yaml.safe_load(SUITE.read_text())
    stage = next(s for s in data["stages"] if s["name"] == STAGE)
    return stage, {k: data[k] for k in ("metric", "resources") if k in data}


def per_horizon(stage: dict[str, Any], grace_fraction: float | None, rf: float) -> list[tuple[int, dict[str, Any]]]:
    """One stage per horizon of ``stage`` (``grid-100``, ...), with ASHA (grace ``grace_fraction`` of the
    horizon, at least one step) when ``grace_fraction`` is given."""
    out = []
    for entry in stage["optimizees"]:
        steps = entry["steps"] if isinstance(entry["steps"], list) else [entry["steps"]]
        for h in steps:
            one = copy.deepcopy(stage)
            one["name"] = f"{STAGE}-{h}"
            one["optimizees"] = [{**entry, "steps": h}]
            if grace_fraction is not None:
                grace = max(1, round(grace_fraction * h))
                one["early_stopping"] = {"scheduler": "asha", "grace_steps": grace, "reduction_factor": rf}
            out.append((h, one))
    return out


def run(name: str, stages: list[tuple[int, dict[str, Any]]], top: dict[str, Any], log: Any) -> dict[int, Any]:
    """Run the stages as one suite in a fresh workdir: per horizon, the stage's seconds, its budget metrics
    and the leaderboard's top config."""
    suite = load_suite_dict({"name": name, **top, "stages": [s for _, s in stages]})
    with tempfile.TemporaryDirectory(prefix=f"sl2o-{name}-") as tmp:
        uri = f"sqlite:///{tmp}/m.db"
        out = run_suite(suite, RunOptions(tracking_uri=uri, workdir=tmp, log=log))
        client = tracking.init_tracking(uri)
        rows = aggregate(tracking.leaderboard_records(client, name))
        res: dict[int, Any] = {}
        for h, stage in stages:
            outcome = out.stages[stage["name"]]
            metrics = client.get_run(outcome.run_id).data.metrics
            best = next(r["optimizer"] for r in rows if r["horizon"] == horizon_label(h, None) and r["rank"] == 1)
            res[h] = {"seconds": outcome.seconds, "best": best, "saved": metrics.get("budget_saved_fraction", 0.0)}
            if "early_stopping" in stage:
                res[h]["grace_steps"] = stage["early_stopping"]["grace_steps"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small grid on a small model (seconds per trial)")
    ap.add_argument("--grace-fraction", type=float, default=0.2, help="ASHA's grace, a share of each horizon")
    ap.add_argument("--reduction-factor", type=float, default=3.0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--verbose", action="store_true", help="print the runs' progress lines")
    args = ap.parse_args()
    if not 0 < args.grace_fraction < 1:
        ap.error("--grace-fraction must be between 0 and 1 (a share of each horizon)")
    log = print if args.verbose else (lambda s: None)
    stage, top = grid_stage(args.quick)
    init_ray(None)
    full = run("es-full", per_horizon(stage, None, args.reduction_factor), top, log)
    asha = run("es-asha", per_horizon(stage, args.grace_fraction, args.reduction_factor), top, log)
    result = {}
    for h in full:
        result[horizon_label(h, None)] = {
            "budget_saved_fraction": round(asha[h]["saved"], 4),
            "seconds_full": round(full[h]["seconds"], 1),
            "seconds_asha": round(asha[h]["seconds"], 1),
            "best_full": full[h]["best"],
            "best_asha": asha[h]["best"],
            "same_best": full[h]["best"] == asha[h]["best"],
            "grace_steps": asha[h]["grace_steps"],
            "reduction_factor": args.reduction_factor,
        }
    for horizon, r in result.items():
        print(
            f"{horizon}: ASHA (grace {r['grace_steps']}, rf {r['reduction_factor']:g}) saved "
            f"{r['budget_saved_fraction']:.0%} of the training steps; {r['seconds_full']:.0f} s -> "
            f"{r['seconds_asha']:.0f} s; best {r['best_full']} vs {r['best_asha']} "
            f"({'same' if r['same_best'] else 'DIFFERENT'})"
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
