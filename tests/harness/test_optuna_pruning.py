"""PruningOptunaSearch: a trial that early stopping ended is told to Optuna as pruned, never as complete."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from harness.engine.optuna_pruning import PruningOptunaSearch
from harness.stages.outputs import ResultKey


def _search() -> PruningOptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0)}
    return PruningOptunaSearch(
        space=space, metric="objective", mode="min", sampler=optuna.samplers.RandomSampler(0)
    )


def _rung(step: int, value: float) -> dict:
    return {
        "objective": value,
        "interim_objective": value,
        ResultKey.STEP: step,
        ResultKey.INTERIM_KEYS: ["interim_objective"],
    }


def test_a_stopped_trial_is_pruned_with_its_rung_values_and_a_finished_one_completes() -> None:
    search = _search()
    assert search.suggest("a") is not None and search.suggest("b") is not None
    # a flush report between rungs (it carries the metric, as Tune asks) is no intermediate value
    search.on_trial_result("a", {"objective": 9.0, ResultKey.STEP: 5, "training_iteration": 1})
    search.on_trial_result("a", _rung(10, 3.0))
    search.on_trial_result("b", _rung(10, 1.0))
    # Tune stops "a" at its second rung: its last result is that report, marked done, no final report
    search.on_trial_complete("a", result={**_rung(30, 2.5), ResultKey.DONE: True})
    search.on_trial_complete("b", result={"objective": 0.5, ResultKey.FINAL: True, ResultKey.DONE: True})
    study = search._ot_study
    assert study is not None
    a, b = study.trials
    # pruned (Optuna keeps its last intermediate value with it, as for any pruned trial; the stopping rung's
    # value never became one): not the partial 2.5 told as a complete objective
    assert a.state == TrialState.PRUNED and a.intermediate_values == {10: 3.0}
    assert b.state == TrialState.COMPLETE and b.value == 0.5
    assert study.best_trial.number == b.number


def test_an_errored_trial_still_fails() -> None:
    search = _search()
    search.suggest("a")
    search.on_trial_complete("a", error=True)
    study = search._ot_study
    assert study is not None and study.trials[0].state == TrialState.FAIL
