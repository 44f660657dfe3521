"""Meta-tuning by Optuna: ask/tell over an equation's constants (TPE or CMA-ES), resumable by storage."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.stages.meta_tune.common import (
    _check_space,
    _start_point,
    _with_constants,
    constants_from_values,
    evaluate_constants,
    optuna_search_space,
)
from harness.stages.problems import build_problem
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import load_equation


# ---------------------------------------------------------------------------------------------------
# Optuna
# ---------------------------------------------------------------------------------------------------
def _default_study_name(equation: Equation, optimizee: Mapping[str, Any], key: Mapping[str, Any]) -> str:
    blob = json.dumps({"eq": equation.text, "optimizee": optimizee, **key}, sort_keys=True, default=str)
    return "meta_tune-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def make_sampler(sampler: str, seed: int, n_trials: int) -> Any:
    import optuna

    if sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=min(10, max(2, n_trials // 3))
        )
    if sampler == "cmaes":
        # no x0: the mean starts at the centre of the space, which is the start point of both multiplier spaces
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {sampler!r}; use tpe, cmaes or random")


def meta_tune_optuna(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    n_trials: int = 20,
    *,
    sampler: str = "tpe",
    storage: str | None = None,
    study_name: str | None = None,
    space: str = "signed",
    radius: float = 10.0,
    eval_steps: int | None = None,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int, float], None] | None = None,
) -> tuple[Equation, dict[str, Any]]:
    """Tune the constants by Optuna ask/tell on :func:`evaluate_constants`.

    ``n_trials`` is the study's total of finished trials: with a persistent ``storage`` (e.g.
    ``sqlite:////abs/optuna.db``) and the same ``study_name`` (default: a hash of the equation, optimizee and
    settings) a rerun resumes and only runs the trials still missing; trials an interrupted run left RUNNING are
    marked FAIL (one process owns a study at a time). The first trial of a new study is the equation as given,
    so the result is never worse than the start on the objective (the mean final training loss of
    ``eval_steps``-step runs on ``seeds``; the optimizee's training split only). ``space``/``radius``: see
    :mod:`~harness.stages.meta_tune.common` (``signed``, the default, lets a constant change sign;
    ``log_multipliers`` and ``constants`` keep signs).

    Returns:
        ``(tuned equation, summary)``; summary holds ``best_value``, ``start_value``, ``best_params``,
        ``n_trials``, ``n_new_trials``, ``study_name``, ``storage`` and ``trials`` (number, value, params, state).
    """
    import optuna

    eq = load_equation(equation)
    _check_space(space, radius)
    seeds = list(seeds) if seeds is not None else [int(seed)]
    dists = optuna_search_space(eq, space, radius)
    x0 = _start_point(eq, space)
    key = {
        "space": space,
        "radius": radius,
        "eval_steps": eval_steps,
        "seeds": seeds,
        "lr": lr,
        "sampler": sampler,
    }
    name = study_name or _default_study_name(eq, optimizee, key)
    summary: dict[str, Any] = {
        "study_name": name,
        "storage": storage,
        "sampler": sampler,
        "space": space,
        "radius": radius,
        "seeds": seeds,
        "eval_steps": eval_steps,
    }
    if not dists:
        return eq, {**summary, "n_trials": 0, "n_new_trials": 0, "note": "no tunable constants", "trials": []}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=make_sampler(sampler, seed, n_trials),
    )
    if study.trials:  # resuming: a fresh random stream, so startup samples do not repeat the first run's
        study.sampler = make_sampler(sampler, seed + len(study.trials), n_trials)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if not study.trials:
        study.enqueue_trial(x0)
    problems = {s: build_problem(optimizee, s, device) for s in seeds}
    new = 0
    while done < n_trials:
        trial = study.ask(dists)
        value = evaluate_constants(
            eq,
            trial.params,
            optimizee,
            space=space,
            radius=radius,
            seeds=seeds,
            eval_steps=eval_steps,
            lr=lr,
            device=device,
            problems=problems,
        )
        study.tell(trial, value)
        done += 1
        new += 1
        if on_progress is not None:  # (finished trials, this trial's objective)
            on_progress(done, float(value))

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial
    start = next(
        (t for t in complete if all(abs(t.params.get(k, math.nan) - v) == 0.0 for k, v in x0.items())), None
    )
    note = {
        "method": "optuna",
        "sampler": sampler,
        "space": space,
        "radius": radius,
        "study_name": name,
        "best_value": best.value,
        "optimizee": dict(optimizee),
        "seeds": seeds,
        "initial_constants": list(eq.constants),
    }
    tuned = _with_constants(eq, constants_from_values(eq, best.params, space, radius), note)
    summary.update(
        {
            "best_value": best.value,
            "best_params": dict(best.params),
            "start_value": None if start is None else start.value,
            "n_trials": len(complete),
            "n_new_trials": new,
            "trials": [
                {"number": t.number, "value": t.value, "params": dict(t.params), "state": t.state.name}
                for t in study.get_trials(deepcopy=False)
            ],
        }
    )
    return tuned, summary
