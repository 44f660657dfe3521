"""Does the distilled rule train networks it has never seen better than tuned baselines, at an equal tuning budget?

Runs ``benchmarks/suites/transfer-panel.yaml`` (``--quick``: two targets, short horizons, the smoke grid, 4
proposals per search, for CI; ``--size gpu``: the same panel with larger models and corpora, a quarter GPU
per trial, for a GPU cluster with ``--address``): one teacher and one distillation (eq. 6 and Operon), then per target the same
four Optuna searches (``hpo`` stages: Adam, SGD and each rule's global knobs, 20 proposals x 2 tuning seeds,
scored by the validation loss at the end of the tuning horizon), the four choices and the untuned rules on
held-out seeds at the tuning horizon and at 5x it, and the paper's 40-config grid on the same seeds. A rerun
resumes (same ``--workdir``), so a finished run reprints at once.

Per target, which rule and which baseline count is decided on validation figures only: "the rule" is the rule
search (eq. 6 or Operon) with the lower best objective, "tuned" the baseline search (Adam or SGD) with the lower
one; each side's tuning budget is its two searches (the rule side also gets the teacher and the distillation,
which every target shares). Per target and horizon, over the evaluation seeds (means):

* ``ratio_vs_grid``: the rule's final train loss over the best grid config's (chosen per horizon in hindsight,
  on the evaluation seeds themselves: a stronger baseline than any tuning could choose);
* ``ratio_vs_tuned``: the rule's final train loss over the tuned baseline's;
* ``rule_test_acc`` / ``best_test_acc``: the rule's test accuracy and the best of the grid's and the tuned
  baselines' (None where the target has no accuracy: the autoencoder);
* ``tuning_trainings_rule`` / ``tuning_trainings_baseline``: target trainings each side spent on tuning;
* ``equation`` (the rule, its step scale and schedule) and ``features`` (the inputs it reads).

Then AlgoPerf-style performance profiles over the panel's tasks (target x horizon) of the final train loss:
``rho(tau)``, the fraction of tasks where a method's loss is within ``tau`` times the best method's, for the
rule, the tuned baseline, and the grid's best Adam and best SGD (in hindsight).
With ``--json`` the last line is the list of rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer import _horizon_steps, _records, per_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "transfer-panel.yaml"
#: the rule searches and the baseline searches of each target (hpo stage name prefixes)
RULES, BASELINES = ("eq6", "operon"), ("adam", "sgd")
#: the quick variant: these targets, at this tuning horizon, the smoke grid, this many proposals per search
QUICK_TARGETS, QUICK_STEPS, QUICK_TRIALS = ("logreg-mnist1d", "autoencoder-digits"), 40, 4
TAUS = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0)


# ---------------------------------------------------------------------------------------------------
# the suite and its quick variant
# ---------------------------------------------------------------------------------------------------
def quick_suite(doc: dict[str, Any]) -> dict[str, Any]:
    """The panel shrunk for CI: :data:`QUICK_TARGETS` only, at :data:`QUICK_STEPS` steps (5x for the long
    horizon), the smoke grid, :data:`QUICK_TRIALS` proposals per search, two evaluation seeds, and a teacher,
    dataset and Operon search a few seconds long. Same stages, same settings otherwise."""
    doc = json.loads(json.dumps(doc))
    doc["name"] = doc["name"] + "-quick"

    def target(spec: Mapping[str, Any]) -> bool:
        return spec.get("label") in QUICK_TARGETS

    stages = []
    for st in doc["stages"]:
        name = st["name"]
        if "." in name and name.split(".", 1)[1] not in QUICK_TARGETS:
            continue
        st = dict(st)
        if st["kind"] == "meta_train":
            st["settings"] = {
                **st["settings"],
                "episodes": 10,
                "episode_length": 40,
                "eval_every": 5,
                "eval_steps": 40,
            }
        elif st["kind"] == "collect":
            st.update(n_samples=600, steps=40)
        elif st["kind"] == "distill" and "operon" in st["backends"]:
            st["settings"] = {**st["settings"], "population_size": 50, "iterations": 5, "max_time_s": 10}
            st["seeds"] = [0]
        elif st["kind"] == "hpo":
            st.update(n_trials=QUICK_TRIALS, optimizee={**st["optimizee"], "steps": QUICK_STEPS})
        elif st["kind"] == "evaluate":
            st["optimizees"] = [
                {**o, "steps": [QUICK_STEPS, 5 * QUICK_STEPS]} for o in st["optimizees"] if target(o)
            ]
            st["optimizers"] = [{"grid": "smoke"} if "grid" in o else o for o in st["optimizers"]]
            st["seeds"] = st["seeds"][:2]
        stages.append(st)
    doc["stages"] = stages
    return doc


#: GPU sizes of the panel's targets (kwargs merged into the CPU sizes): the same families, data and horizons
GPU_KWARGS: dict[str, dict[str, Any]] = {
    "mlp-mnist1d": {"hidden": [512, 512, 512]},
    "gru-lm": {"hidden": 256, "layers": 2, "vocab": 32, "order": 3, "seq_len": 64, "num_train": 20000},
    "transformer-lm": {
        "hidden": 256,
        "layers": 2,
        "heads": 8,
        "vocab": 32,
        "order": 3,
        "seq_len": 128,
        "num_train": 20000,
    },
    "autoencoder-digits": {"hidden": [256, 64], "latent": 16},
    "mlp3-digits": {"hidden": [256, 256, 256]},
    "resnet18-digits16": {"dataset": "digits32", "width": 64, "batch_size": 128},
}
#: a GPU trial's share of a GPU: four of the panel's small trainings share one device
GPU_RESOURCES = {"cpus_per_trial": 2, "gpus_per_trial": 0.25}


def gpu_suite(doc: dict[str, Any]) -> dict[str, Any]:
    """The panel at GPU sizes (:data:`GPU_KWARGS`, every trial with a quarter of a GPU): the same stages,
    targets, horizons, searches and seeds, larger models and corpora."""
    doc = json.loads(json.dumps(doc))
    doc["name"] = doc["name"] + "-gpu"
    doc["resources"] = dict(GPU_RESOURCES)

    def grow(spec: dict[str, Any]) -> dict[str, Any]:
        more = GPU_KWARGS.get(spec.get("label", ""), {})
        return {**spec, "kwargs": {**spec.get("kwargs", {}), **more}} if more else spec

    for st in doc["stages"]:
        if "optimizee" in st and st["kind"] == "hpo":
            st["optimizee"] = grow(st["optimizee"])
        if st["kind"] == "evaluate":
            st["optimizees"] = [grow(o) for o in st["optimizees"]]
    return doc


def load_panel(path: str | Path, quick: bool = False, size: str = "cpu") -> Any:
    """The panel suite (its quick variant with ``quick``; at GPU sizes with ``size="gpu"``), validated."""
    from harness.config.suite import load_suite_dict
    from search_spaces.safe_yaml import read_yaml

    if size not in ("cpu", "gpu"):
        raise ValueError(f"size must be cpu or gpu, got {size!r}")
    doc = read_yaml(Path(path))
    doc = gpu_suite(doc) if size == "gpu" else doc
    return load_suite_dict(quick_suite(doc) if quick else doc, source=str(path))


# ---------------------------------------------------------------------------------------------------
# reading the run
# ---------------------------------------------------------------------------------------------------
def targets(suite: Any) -> list[str]:
    """The panel's targets: the names after ``rules.`` of its per-target evaluate stages, in suite order."""
    return [
        s.name.split(".", 1)[1] for s in suite.stages if s.kind == "evaluate" and s.name.startswith("rules.")
    ]


def search_result(outcome: Any, stage: str) -> dict[str, Any]:
    """An hpo stage's choice: ``{"config", "objective", "trainings"}`` (objective inf when nothing finished)."""
    st = outcome.stages.get(stage)
    if st is None or not st.extra.get("chosen"):
        return {"config": None, "objective": math.inf, "trainings": 0.0}
    m = st.extra.get("metrics") or {}
    return {
        "config": dict(st.extra["chosen"]),
        "objective": float(m.get("best_objective", math.inf)),
        "trainings": float(m.get("tuning_trainings", 0.0)),
    }


def pick(outcome: Any, target: str, methods: Sequence[str]) -> tuple[str, dict[str, Any], float]:
    """``(method, its search result, the trainings all of ``methods`` spent)``: of the searches
    ``METHOD.TARGET``, the one with the lowest best objective (validation figures only; ties: the first)."""
    found = {m: search_result(outcome, f"{m}.{target}") for m in methods}
    best = min(methods, key=lambda m: (found[m]["objective"], methods.index(m)))
    return best, found[best], sum(r["trainings"] for r in found.values())


def _name(optimizer: str) -> str:
    """An evaluate optimizer label's entry name: ``symbolic:eq6-tuned(lr_mult=2)`` -> ``eq6-tuned``."""
    head = optimizer.split("(", 1)[0]
    return head.split(":", 1)[1] if ":" in head else head


def _rule_text(config: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The chosen rule as printed (equation, step scale, schedule) and the features it reads."""
    from harness.symbolic.lang import Equation
    from harness.training.schedules import describe_schedule

    eq = Equation.load(config["equation"])
    parts = [eq.text]
    scale = float(config.get("lr_mult", 1.0))
    if scale != 1.0:
        parts.append(f"x {scale:.4g}")
    sched = describe_schedule(str(config.get("schedule") or "constant"), float(config.get("warmup", 0.0)))
    if sched:
        parts.append(f"x [{sched}]")
    return "  ".join(parts), sorted(eq.variables)


def _family_best(
    by_opt: Mapping[str, Mapping[str, float]], family: str
) -> tuple[str, Mapping[str, float]] | None:
    rows = [(k, v) for k, v in by_opt.items() if k.startswith(f"{family}(")]
    return min(rows, key=lambda kv: kv[1]["loss"]) if rows else None


def panel_rows(suite: Any, outcome: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """The rows (module docstring) and, per task, the final train loss of each profiled method."""
    grid_all = _records_with_optimizee(outcome.stages["grid"]) if "grid" in outcome.stages else []
    rows: list[dict[str, Any]] = []
    losses: dict[str, dict[str, float]] = {}
    for target in targets(suite):
        stage = f"rules.{target}"
        if stage not in outcome.stages:
            continue
        rule_method, rule, rule_budget = pick(outcome, target, RULES)
        base_method, base, base_budget = pick(outcome, target, BASELINES)
        evals = per_optimizer(_records(outcome.stages[stage]))
        grid_records = [r for r in grid_all if r["optimizee"] == target]
        gridh = per_optimizer(grid_records)
        equation, features = _rule_text(rule["config"]) if rule["config"] else ("(no rule chosen)", [])
        for horizon in sorted(evals, key=_horizon_steps):
            by_name = {_name(k): v for k, v in evals[horizon].items()}
            r_row = by_name.get(f"{rule_method}-tuned", {"loss": math.inf, "test_acc": 0.0})
            t_row = by_name.get(f"{base_method}-tuned", {"loss": math.inf, "test_acc": 0.0})
            g = gridh.get(horizon, {})
            best_name, best = min(g.items(), key=lambda kv: kv[1]["loss"]) if g else ("", {"loss": math.nan})
            has_acc = any(_has_acc(r) for r in grid_records)
            accs = [v["test_acc"] for v in g.values()] + [t_row["test_acc"]]
            rows.append(
                {
                    "target": target,
                    "horizon": horizon,
                    "ratio_vs_grid": _ratio(r_row["loss"], best["loss"]),
                    "ratio_vs_tuned": _ratio(r_row["loss"], t_row["loss"]),
                    "rule_test_acc": r_row["test_acc"] if has_acc else None,
                    "best_test_acc": max(accs) if has_acc else None,
                    "tuning_trainings_rule": rule_budget,
                    "tuning_trainings_baseline": base_budget,
                    "equation": equation,
                    "features": features,
                    "rule": f"{rule_method}-tuned",
                    "tuned_baseline": f"{base_method}-tuned",
                    "rule_loss": r_row["loss"],
                    "tuned_loss": t_row["loss"],
                    "best_grid_loss": best["loss"],
                    "best_grid_config": best_name,
                }
            )
            task = f"{target} · {horizon}"
            losses[task] = {"rule": r_row["loss"], "tuned Adam/SGD": t_row["loss"]}
            for family in ("adam", "sgd"):
                fb = _family_best(g, family)
                if fb is not None:
                    losses[task][f"grid's best {family}"] = fb[1]["loss"]
    return rows, losses


def _has_acc(record: Mapping[str, Any]) -> bool:
    return "test_acc" in record


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else math.inf


def _records_with_optimizee(stage: Any) -> list[dict[str, Any]]:
    """:func:`transfer._records` plus each trial's optimizee label."""
    out = _records(stage)
    for rec, t in zip(out, stage.trials, strict=True):
        rec["optimizee"] = t.tag("optimizee")
    return out


def profile_lines(losses: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The performance profile table: ``rho(tau)`` per method over the tasks (final train loss ratios)."""
    from harness.report.across import profiles

    rho = profiles(losses, TAUS)
    head = "  ".join(f"tau={t:g}" for t in TAUS)
    lines = [
        f"performance profiles over {len(losses)} tasks (final train loss within tau x the best method's):"
    ]
    lines.append(f"  {'method':22s} {head}")
    for method, values in sorted(rho.items(), key=lambda kv: (-sum(kv[1]), kv[0])):
        lines.append(
            f"  {method:22s} "
            + "  ".join(f"{v:>{len(f'tau={t:g}')}.2f}" for v, t in zip(values, TAUS, strict=True))
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=str(SUITE))
    ap.add_argument("--quick", action="store_true", help="two targets, short horizons (CI)")
    ap.add_argument(
        "--size", choices=("cpu", "gpu"), default="cpu", help="gpu: larger targets, a quarter GPU per trial"
    )
    ap.add_argument("--workdir", default="sl2o_runs", help="Tune state and the default MLflow store")
    ap.add_argument("--address", default=None, help="a Ray cluster (default: local Ray)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from harness.engine.runner import RunOptions, run_suite

    suite = load_panel(args.suite, args.quick, args.size)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 -- progress to stderr
    outcome = run_suite(suite, RunOptions(address=args.address, workdir=args.workdir, log=log))
    rows, losses = panel_rows(suite, outcome)
    print(
        f"suite {suite.name}: {len(targets(suite))} targets, rule vs the grid (hindsight) and vs tuned Adam/SGD"
    )
    for row in rows:
        acc = (
            ""
            if row["rule_test_acc"] is None
            else f"; test acc {100 * row['rule_test_acc']:.1f}% vs best {100 * row['best_test_acc']:.1f}%"
        )
        print(
            f"  {row['target']:20s} {row['horizon']:>10s}: {row['rule']} loss {row['rule_loss']:.4g}, "
            f"vs grid {row['ratio_vs_grid']:.3f} ({row['best_grid_config']}), vs {row['tuned_baseline']} "
            f"{row['ratio_vs_tuned']:.3f}{acc}; tuning trainings {row['tuning_trainings_rule']:g} vs "
            f"{row['tuning_trainings_baseline']:g}"
        )
    for target in targets(suite):
        eqs = {r["equation"] for r in rows if r["target"] == target}
        feats = {", ".join(r["features"]) for r in rows if r["target"] == target}
        for eq in eqs:
            print(f"  {target}: {eq}  (reads {'; '.join(feats)})")
    for line in profile_lines(losses):
        print(line)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
