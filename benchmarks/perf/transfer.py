"""Does the distilled, meta-fine-tuned rule beat the tuned grid on a new network, at two horizons?

Runs ``benchmarks/suites/table4-cpu.yaml`` (or ``--suite``): RP(extra) meta-trained on an MLP, distilled into
eq. 6 and by Operon, each rule meta-fine-tuned in one pass of ResNet-18/digits training (validation split of
the training digits), then evaluated with the teacher against the paper's 40-config grid on held-out seeds at
the tuning horizon and at 5x it. A rerun resumes (same ``--workdir``), so a finished run reprints at once.

Which symbolic rule is "the" rule is decided without reading any evaluation result, on validation runs only: every
rule a meta_tune stage kept (tuned constants, or the initial ones when tuning was rejected) is trained on that
stage's tuning seeds, with its validation split held out of the training digits, at each horizon the rules are
evaluated at (never the evaluation seeds or the test split; :func:`rule_candidates`). A rule is eligible when
its validation accuracy is within :data:`ACC_MARGIN` of the best rule's at every horizon; of those, the one
with the lowest train loss (the suite's metric, the one ``ratio`` compares) relative to the best rule's,
averaged in log over the horizons, is chosen (:func:`pick_rule`). A rule is thus chosen for what the comparison
measures, training speed at both horizons, while no rule that generalises visibly worse at either can win.
Per horizon it prints, over the evaluation seeds:

* the rule's mean final train loss, the best grid config's (chosen per horizon in hindsight by that loss) and
  ``ratio`` = rule / best grid;
* the rule's mean test accuracy and the best grid config's, that config chosen by test accuracy;
* the chosen equation;

and, on the teacher's own task (the ``own-task`` evaluate stage), each distilled rule's loss over the teacher's.
With ``--json`` the last line is ``[{"horizon", "symbolic_loss", "best_grid_loss", "best_grid_config",
"ratio", "symbolic_test_acc", "best_grid_test_acc", "equation"}]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.stages.outputs import entry_name, equations_from_stage

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "table4-cpu.yaml"


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def _horizon_steps(horizon: str) -> float:
    match = re.match(r"\s*([0-9.]+)", horizon or "")
    return float(match.group(1)) if match else math.inf


def per_optimizer(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{horizon: {optimizer: {"loss", "test_acc", "seeds"}}}`` means over seeds of evaluate records
    (``optimizer``, ``horizon``, ``seed``, ``status``, ``final_train_loss``, ``test_acc``). A config with a
    diverged or errored seed gets an infinite loss and zero accuracy (it did not train)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(str(r["horizon"]), str(r["optimizer"]))].append(r)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (horizon, name), rows in groups.items():
        ok = all(
            r.get("status", "ok") == "ok" and math.isfinite(r.get("final_train_loss", math.nan)) for r in rows
        )
        out[horizon][name] = {
            "loss": _mean(float(r["final_train_loss"]) for r in rows) if ok else math.inf,
            "test_acc": _mean(float(r.get("test_acc", 0.0)) for r in rows) if ok else 0.0,
            "seeds": float(len(rows)),
        }
    return dict(out)


def compare(
    grid: Sequence[Mapping[str, Any]], rule: Sequence[Mapping[str, Any]], equation: str
) -> list[dict[str, Any]]:
    """One row per horizon: the rule's records against the grid's (module docstring)."""
    g, r = per_optimizer(grid), per_optimizer(rule)
    rows = []
    for horizon in sorted(set(g) & set(r), key=_horizon_steps):
        (name, sym), *others = r[horizon].items()
        if others:
            raise ValueError(f"rule records name several optimizers at {horizon}: {[name, *dict(others)]}")
        best_name, best = min(g[horizon].items(), key=lambda kv: kv[1]["loss"])
        best_acc = max(v["test_acc"] for v in g[horizon].values())
        rows.append(
            {
                "horizon": horizon,
                "symbolic_loss": sym["loss"],
                "best_grid_loss": best["loss"],
                "best_grid_config": best_name,
                "ratio": sym["loss"] / best["loss"] if best["loss"] > 0 else math.inf,
                "symbolic_test_acc": sym["test_acc"],
                "best_grid_test_acc": best_acc,
                "equation": equation,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# reading a suite run
# ---------------------------------------------------------------------------------------------------
def _records(stage: Any) -> list[dict[str, Any]]:
    return [
        {
            "optimizer": t.tag("optimizer"),
            "horizon": t.tag("horizon", ""),
            "seed": t.tag("seed"),
            "status": t.tag("status", "ok"),
            **{k: v for k, v in t.metrics.items() if k in ("final_train_loss", "test_acc")},
        }
        for t in stage.trials
    ]


def rule_text(equation: Any) -> str:
    """The rule as printed: its equation, and the step-size schedule it carries when it has one."""
    from harness.training.schedules import FORMULAS, equation_schedule

    schedule = equation_schedule(equation.provenance)
    if schedule == "constant":
        return equation.text
    return f"{equation.text}  [x the {schedule} schedule over the run: {FORMULAS[schedule]}]"


#: a rule may trail the best rule's validation accuracy by this much and still be chosen (the issue's 1 point)
ACC_MARGIN = 0.01


def pick_rule(candidates: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The key of the candidate rule that trains fastest at every horizon without generalising visibly worse.

    ``candidates`` is ``{key: {horizon: {"train_loss", "val_acc"}}}`` (validation runs). A rule is eligible
    when, at every horizon, it has a finite train loss and its ``val_acc`` is at least that horizon's best
    minus :data:`ACC_MARGIN` (no accuracy anywhere: not a classifier, all eligible; none eligible: all are).
    Among the eligible, the lowest mean over horizons of log(train loss / that horizon's best train loss) wins:
    train losses at 100 and 500 steps differ by orders of magnitude, so each horizon counts by its ratio.
    """
    if not candidates:
        raise ValueError("no candidate rules")
    horizons = sorted({h for c in candidates.values() for h in c}, key=_horizon_steps)

    def at(key: str, h: str, metric: str) -> float:
        return float(candidates[key].get(h, {}).get(metric, math.nan))

    def finite(key: str) -> bool:
        return all(math.isfinite(at(key, h, "train_loss")) for h in horizons)

    keys = [k for k in candidates if finite(k)] or list(candidates)
    best_loss = {h: min((at(k, h, "train_loss") for k in keys), default=math.nan) for h in horizons}
    floors = {}
    for h in horizons:
        accs = [at(k, h, "val_acc") for k in keys if math.isfinite(at(k, h, "val_acc"))]
        floors[h] = max(accs) - ACC_MARGIN if accs else -math.inf
    eligible = [k for k in keys if all(not at(k, h, "val_acc") < floors[h] for h in horizons)] or keys

    def score(key: str) -> float:
        ratios = [at(key, h, "train_loss") / best_loss[h] for h in horizons]
        return sum(math.log(r) if r > 0 else -math.inf for r in ratios) / len(ratios)

    return min(eligible, key=lambda k: (score(k), k))


def _tuned_rules(suite: Any, outcome: Any) -> dict[str, tuple[str, str, Path]]:
    """``{key: (meta_tune stage, equation label, equation file)}`` of every rule a finished meta_tune stage
    output (:func:`equations_from_stage`); the key is the stage's name when it output one rule, else the
    equation's label (``tune-s1``)."""
    rules: dict[str, tuple[str, str, Path]] = {}
    for spec in suite.stages:
        if spec.kind == "meta_tune" and spec.name in outcome.stages:
            found = equations_from_stage(outcome.stages[spec.name])
            for label, path in found:
                rules[spec.name if len(found) == 1 else label] = (spec.name, label, path)
    return rules


def _rules_horizons(suite: Any, stages: set[str]) -> list[int]:
    """The step counts at which the evaluate stage that runs the rules of ``stages`` trains its optimizee."""
    for spec in suite.stages:
        if spec.kind == "evaluate" and any(getattr(o, "from_stage", None) in stages for o in spec.optimizers):
            steps = spec.optimizees[0].steps
            return sorted(int(x) for x in (steps if isinstance(steps, list) else [steps]))
    raise SystemExit("no evaluate stage runs the tuned rules")


def rule_candidates(
    suite: Any, outcome: Any, cache: Path | None = None, log: Any = print
) -> dict[str, dict[str, dict[str, float]]]:
    """``{key: {horizon: {"train_loss", "val_acc", "val_loss"}}}``: every rule the meta_tune stages output
    (keyed as :func:`_tuned_rules` keys it), trained on the stage's own tuning seeds (``eval_seeds``) with its
    validation split held out of the training data, for each horizon the rules are evaluated at; means over
    seeds (a diverged seed makes the loss infinite). Never the evaluation seeds or the test split. Runs are
    kept in ``cache`` (a JSON file) by code version, equation, optimizee, seed and steps, so a rerun repeats none."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    import torch

    from harness.engine.stagekey import code_version
    from harness.stages.meta_tune.common import validation_run, with_val_split

    rules = _tuned_rules(suite, outcome)
    horizons = _rules_horizons(suite, {stage for stage, *_ in rules.values()})
    done: dict[str, dict[str, float]] = json.loads(cache.read_text()) if cache and cache.exists() else {}
    plan: dict[tuple[str, str], list[str]] = defaultdict(list)  # (key, horizon) -> cache ids
    code = code_version()  # a run's figures depend on the code that trained it
    jobs: dict[str, tuple[str, dict[str, Any], int, int]] = {}
    for key, (stage, _, path) in rules.items():
        spec = suite.stage(stage)
        settings = spec.settings.model_dump()
        target = with_val_split(spec.optimizee.model_dump(exclude_none=True), settings["val_fraction"])
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        for steps in horizons:
            for seed in settings["eval_seeds"] or spec.seeds:
                job_id = json.dumps(
                    [code["commit"], code["diff"], digest, target, seed, steps], sort_keys=True
                )
                plan[key, f"{steps} steps"].append(job_id)
                if job_id not in done:
                    jobs[job_id] = (str(path), target, int(seed), steps)
    if jobs:
        log(
            f"validating {len(rules)} rules at {horizons} steps: {len(jobs)} training runs on the tuning seeds"
        )
        ctx = get_context("spawn")  # never fork a process that runs Ray's threads
        with ProcessPoolExecutor(
            os.cpu_count() or 1, ctx, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            futures = {pool.submit(validation_run, *job): job_id for job_id, job in jobs.items()}
            for n, future in enumerate(as_completed(futures), 1):
                done[futures[future]] = future.result()
                if n % 5 == 0 or n == len(futures):
                    log(f"  {n}/{len(futures)} validation runs done")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(done))
            tmp.replace(cache)
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (key, horizon), job_ids in plan.items():
        runs = [done[j] for j in job_ids]
        diverged = any(not math.isfinite(r["train_loss"]) for r in runs)
        out[key][horizon] = {
            "train_loss": math.inf if diverged else _mean(r["train_loss"] for r in runs),
            "val_acc": 0.0 if diverged else _mean(r["val_acc"] for r in runs),
            "val_loss": math.inf if diverged else _mean(r["val_loss"] for r in runs),
        }
    return dict(out)


def chosen_rule(
    suite: Any, outcome: Any, candidates: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> tuple[str, str, str]:
    """``(candidate key, evaluate optimizer name, equation text)`` of the rule :func:`pick_rule` chooses
    among ``candidates`` (:func:`rule_candidates`; module docstring)."""
    from harness.symbolic.lang import Equation

    if not candidates:
        raise SystemExit("no meta_tune stage finished: no rule to compare")
    key = pick_rule(candidates)
    rules = _tuned_rules(suite, outcome)
    stage_name, label, path = rules[key]
    count = sum(1 for r in rules.values() if r[0] == stage_name)
    text = rule_text(Equation.load(path))
    for spec in suite.stages:
        if spec.kind == "evaluate":
            for entry in spec.optimizers:
                if getattr(entry, "from_stage", None) == stage_name:
                    return key, entry_name(getattr(entry, "name", None), label, stage_name, count), text
    raise SystemExit(f"no evaluate stage runs the rule of meta_tune stage {stage_name!r}")


def _label(optimizer: str) -> str:
    """An evaluate optimizer's name without its family prefix (``symbolic:eq6-tuned`` -> ``eq6-tuned``)."""
    return optimizer.split(":", 1)[1] if optimizer.startswith(("symbolic:", "teacher:")) else optimizer


def _split(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if _label(r["optimizer"]) == name]


def own_task_ratios(outcome: Any, stage: str = "own-task") -> dict[str, float]:
    """Each distilled rule's mean final train loss over the teacher's, on the teacher's own task."""
    if stage not in outcome.stages:
        return {}
    st = outcome.stages[stage]
    teachers = {t.tag("optimizer") for t in st.trials if t.tag("optimizer_family") == "teacher"}
    means = {k: v["loss"] for h in per_optimizer(_records(st)).values() for k, v in h.items()}
    teacher = _mean(means[t] for t in teachers)
    return {_label(k): v / teacher for k, v in means.items() if k not in teachers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=str(SUITE))
    ap.add_argument("--workdir", default="sl2o_runs", help="Tune state and the default MLflow store")
    ap.add_argument("--address", default=None, help="a Ray cluster (default: local Ray)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from harness.config.suite import load_suite
    from harness.engine.runner import RunOptions, run_suite

    suite = load_suite(args.suite)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 -- progress to stderr
    outcome = run_suite(suite, RunOptions(address=args.address, workdir=args.workdir, log=log))
    cache = Path(args.workdir) / "transfer" / f"{suite.name}-validation.json"
    candidates = rule_candidates(suite, outcome, cache, log)
    key, rule_name, equation = chosen_rule(suite, outcome, candidates)
    grid = [r for spec in suite.stages if spec.name == "grid" for r in _records(outcome.stages[spec.name])]
    rules = [r for spec in suite.stages if spec.name == "rules" for r in _records(outcome.stages[spec.name])]
    rows = compare(grid, _split(rules, rule_name), equation)
    print(
        f"suite {suite.name}: candidate rules on validation runs (tuning seeds, validation split of the training data):"
    )
    for name, by_h in sorted(candidates.items()):
        cells = "  ".join(
            f"{h}: train loss {c['train_loss']:.4g}, val acc {100 * c['val_acc']:.1f}%"
            for h, c in sorted(by_h.items(), key=lambda kv: _horizon_steps(kv[0]))
        )
        print(f"  {name:24s} {cells}{'  <- chosen' if name == key else ''}")
    print(
        f"rule {key!r} (at every horizon within {100 * ACC_MARGIN:g} point of the best val acc; of those, the lowest "
        "mean log train loss over the best's):"
    )
    print(f"  {equation}")
    for row in rows:
        print(
            f"{row['horizon']}: train loss {row['symbolic_loss']:.4g} vs best grid {row['best_grid_loss']:.4g} "
            f"({row['best_grid_config']}), ratio {row['ratio']:.3f}; test acc {100 * row['symbolic_test_acc']:.1f}% "
            f"vs best grid {100 * row['best_grid_test_acc']:.1f}%"
        )
    for name, ratio in sorted(own_task_ratios(outcome).items()):
        print(f"teacher's own task: {name} loss / teacher loss = {ratio:.3f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
