"""Optuna meta-tuning with each Optuna trial as its own stage trial (``search: tune``; pure: no Ray, no MLflow).

The stage kind declares a :class:`~harness.stages.base.SearchSpec` (:func:`search_spec`: the in-trial mode's
search space, sampler and start point); the runner (:mod:`harness.engine.search`) lets Ray Tune's
``OptunaSearch`` propose the trials, and each evaluates ONE point (:func:`evaluate_point`, same objective).
The finalize step (:func:`select`) takes the best trial (the earlier on ties), applies the in-trial mode's
keep-or-reject on the validation split (:func:`~harness.stages.meta_tune.tune.select_tuned`) and writes the
stage's ``equation.json``/``history.json``, which later stages read through ``outcome.extra["chosen"]``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.stages.base import SearchSpec, TrialResult, settings_fields
from harness.stages.meta_tune.common import (
    _start_point,
    _with_constants,
    constants_from_values,
    evaluate_constants,
    optuna_search_space,
    with_schedule,
    with_val_split,
)
from harness.stages.meta_tune.optuna_search import make_sampler, meta_tune_optuna
from harness.stages.meta_tune.settings import NOT_SETTINGS
from harness.stages.meta_tune.tune import meta_tune, select_tuned, write_outputs
from harness.stages.outputs import EQUATION_FILE, HISTORY_FILE, STATUS_STOPPED, StageOutcome, TrialOutput, tag
from harness.stages.problems import resolve_device
from harness.symbolic.optim.optimizer import load_equation

#: the final-report metric of a search trial (what Optuna minimises)
OBJECTIVE = "objective"
#: the Optuna trial number of a search trial (metric and tag)
INDEX = "search_index"
#: the trial's parameters, as JSON (an ``sl2o.search_params`` tag)
PARAMS = "search_params"
#: a search trial's artifact: the equation it tuned (the select step reads it on the driver, where the
#: trial's own input may be a storage URI)
INITIAL_FILE = "initial_equation.json"


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta_tune's, the search's)`` settings with defaults filled in, split as :func:`meta_tune` splits them
    (a name both take, ``eval_steps``, is meta_tune's: the before/after runs)."""
    own = set(settings_fields(meta_tune, NOT_SETTINGS))
    search = set(settings_fields(meta_tune_optuna, NOT_SETTINGS)) - own
    mt = {k: v for k, v in _defaults(meta_tune).items() if k in own}
    opt = {k: v for k, v in _defaults(meta_tune_optuna).items() if k in search}
    opt["eval_steps"] = None  # the search's runs use the spec's budget, as in meta_tune
    for k, v in settings.items():
        (mt if k in own else opt)[k] = v
    return mt, opt


def search_spec(trial: Any) -> SearchSpec | None:
    """The Optuna search of one meta_tune trial model (its equation, settings and seed), or None when the
    equation has no constant to tune (the trial then runs as it is and says so)."""
    _, opt = split_settings(trial.settings)
    eq = load_equation(Path(trial.equation))
    dists = optuna_search_space(eq, opt["space"], float(opt["radius"]))
    if not dists:
        return None
    n = int(opt["n_trials"])
    return SearchSpec(
        base=trial,
        space=dists,
        num_samples=n,
        metric=OBJECTIVE,
        mode="min",
        sampler=make_sampler(str(opt["sampler"]), int(trial.seed), n),
        start=[_start_point(eq, opt["space"])],
    )


def evaluate_point(
    trial: Any, outdir: Path, on_progress: Callable[[int, float], None] | None = None
) -> TrialResult:
    """One search trial: the objective at ``trial.search_params`` (what the in-trial study's ``tell`` gets);
    the equation it started from is written to ``outdir`` for the select step. ``on_progress`` gets the
    interim objective at each log point (:func:`~harness.stages.meta_tune.common.evaluate_constants`), which
    early stopping compares."""
    mt, opt = split_settings(trial.settings)
    eq = with_schedule(load_equation(Path(trial.equation)), mt.get("schedule"))
    target = with_val_split(trial.optimizee.model_dump(exclude_none=True), mt["val_fraction"])
    values = dict(trial.search_params or {})
    seeds = list(opt["seeds"]) if opt.get("seeds") is not None else [int(trial.seed)]
    value = evaluate_constants(
        eq,
        values,
        target,
        space=opt["space"],
        radius=float(opt["radius"]),
        seeds=seeds,
        eval_steps=opt["eval_steps"],
        lr=float(opt["lr"]),
        device=resolve_device(trial.device),
        on_progress=on_progress,
    )
    metrics = {OBJECTIVE: float(value), INDEX: float(trial.search_index or 0)}
    files = {INITIAL_FILE: eq.save(Path(outdir) / INITIAL_FILE)}
    return TrialResult(metrics, files=files, info={PARAMS: json.dumps(values, sort_keys=True)})


def _points(outcome: StageOutcome) -> list[tuple[int, float, dict[str, float], TrialOutput]]:
    """``(index, objective, params, trial)`` of every finished search trial of ``outcome``, by index: never one
    that early stopping ended (it has a partial training loss, no objective; it can never be the best)."""
    out = []
    for t in outcome.trials:
        raw = t.tags.get(tag(PARAMS))
        if raw is None or OBJECTIVE not in t.metrics or t.tags.get(tag("status")) == STATUS_STOPPED:
            continue
        index = int(t.metrics.get(INDEX, -1))
        out.append((index, float(t.metrics[OBJECTIVE]), json.loads(raw), t))
    return sorted(out, key=lambda p: p[0])


def select(spec: Any, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]) -> None:
    """The stage's output after a search run as trials: the best trial's constants, kept only when no worse
    than the initial ones on the validation split; ``equation.json``/``history.json`` in ``outdir``,
    ``outcome.extra["chosen"]`` and ``outcome.extra["metrics"]``. A stage whose trials were not search trials
    (an equation without constants) is left alone. Done once per stage key: a reused stage reads it back."""
    points = _points(outcome)
    if not points:
        return
    index, best_value, best_params, best = min(points, key=lambda p: (p[1], p[0]))
    eq_file = best.config.get("equation") or ""
    seed = int(best.config.get("seed", spec.seeds[0]))
    chosen = {f"s{seed}": outdir / EQUATION_FILE}
    hist_file = outdir / HISTORY_FILE
    if hist_file.exists() and (outdir / EQUATION_FILE).exists():
        doc = json.loads(hist_file.read_text())
        if (doc.get("details") or {}).get("best_run") == best.run_id:
            outcome.extra["chosen"] = chosen
            outcome.extra["metrics"] = dict(doc.get("summary") or {})
            return
    mt, opt = split_settings(spec.settings.model_dump(exclude_unset=True))
    art = best.artifacts
    eq = load_equation(
        art / INITIAL_FILE if art is not None and (art / INITIAL_FILE).exists() else Path(eq_file)
    )
    space, radius = opt["space"], float(opt["radius"])
    x0 = _start_point(eq, space)
    start = next((v for _, v, p, _ in points if all(p.get(k) == x for k, x in x0.items())), None)
    note = {
        "method": "optuna",
        "search": "tune",
        "sampler": opt["sampler"],
        "space": space,
        "radius": radius,
        "best_value": best_value,
        "optimizee": spec.optimizee.model_dump(exclude_none=True),
        "seeds": opt.get("seeds") or [seed],
        "initial_constants": list(eq.constants),
    }
    tuned = _with_constants(eq, constants_from_values(eq, best_params, space, radius), note)
    trials = [
        {"number": i, "value": v, "params": p, "state": "COMPLETE", "run_id": t.run_id}
        for i, v, p, t in points
    ]
    summary = {
        "search": "tune",
        "sampler": opt["sampler"],
        "space": space,
        "radius": radius,
        "seeds": opt.get("seeds") or [seed],
        "best_value": best_value,
        "best_params": best_params,
        "best_index": index,
        "best_run": best.run_id,
        "start_value": start,
        "n_trials": len(points),
        "n_new_trials": len(points),
        "n_stopped": sum(1 for t in outcome.trials if t.tags.get(tag("status")) == STATUS_STOPPED),
        "trials": trials,
    }
    target = with_val_split(spec.optimizee.model_dump(exclude_none=True), mt["val_fraction"])
    result = select_tuned(
        eq,
        tuned,
        target,
        "optuna",
        summary,
        {"trials": trials},
        seeds=list(mt["eval_seeds"]) if mt.get("eval_seeds") is not None else [seed],
        eval_steps=mt["eval_steps"],
        device=resolve_device(spec.device),
        keep=mt["keep"],
        test_metrics=bool(mt["test_metrics"]),
    )
    write_outputs(result, outdir)
    metrics = {k: float(v) for k, v in result.summary().items() if math.isfinite(float(v))}
    outcome.extra["chosen"] = chosen
    outcome.extra["metrics"] = metrics
    log(
        f"[{outcome.name}] best of {len(points)} Tune trials: #{index} (objective {best_value:.4g}); "
        f"validation loss {metrics.get('val_loss_before', math.nan):.4g} -> "
        f"{metrics.get('val_loss_after', math.nan):.4g}, kept {result.details['kept']}"
    )
