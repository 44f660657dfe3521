"""The evaluate stage as a pure function: curves, metrics, budgets, determinism, divergence."""

from __future__ import annotations

import math

import pytest

from harness.stages.evaluate import evaluate

P1 = {"name": "quadratic_cos", "steps": 60}
DIGITS = {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [16], "batch_size": 64}, "epochs": 1}


def test_trains_p1_and_records_curve() -> None:
    res = evaluate(P1, {"family": "adam", "lr": 0.05}, seed=0, log_every=10)
    assert res.status == "ok" and res.steps == 60 == res.budget_steps
    assert res.curve_steps == [1, 10, 20, 30, 40, 50, 60]
    assert res.curve_loss[-1] < res.curve_loss[0]
    assert math.isfinite(res.final_train_loss) and math.isfinite(res.test_loss)
    assert res.test_acc is None and res.wall_time_s > 0
    assert set(res.metrics()) >= {"final_train_loss", "test_loss", "wall_time_s", "diverged"}


def test_same_seed_same_result_on_cpu() -> None:
    a = evaluate(DIGITS, {"family": "sgd", "lr": 0.1, "momentum": 0.9}, seed=3)
    b = evaluate(DIGITS, {"family": "sgd", "lr": 0.1, "momentum": 0.9}, seed=3)
    c = evaluate(DIGITS, {"family": "sgd", "lr": 0.1, "momentum": 0.9}, seed=4)
    assert a.curve_loss == b.curve_loss and a.test_loss == b.test_loss
    assert a.curve_loss != c.curve_loss


def test_epochs_budget_and_accuracy() -> None:
    res = evaluate(DIGITS, {"family": "adam", "lr": 0.01, "cosine": True}, seed=0)
    assert res.status == "ok"
    assert res.steps > 1 and res.test_acc is not None and 0.0 <= res.test_acc <= 1.0


def test_divergence_is_a_result_not_an_exception() -> None:
    res = evaluate({"name": "quadratic_cos", "steps": 500}, {"family": "sgd", "lr": 50.0}, seed=0)
    assert res.status == "diverged"
    assert res.diverged_at is not None and res.diverged_at < 500
    assert math.isinf(res.final_train_loss) and res.metrics()["diverged"] == 1.0


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown optimizer family 'rmsprop'"):
        evaluate(P1, {"family": "rmsprop", "lr": 0.1}, seed=0)


@pytest.mark.parametrize(
    ("optimizer", "state_bytes"),
    [
        ({"family": "sgd", "lr": 0.05}, 0.0),
        ({"family": "sgd", "lr": 0.05, "momentum": 0.9}, 4.0),  # one float32 buffer per parameter
        ({"family": "adam", "lr": 0.01}, 8.0),  # two float32 moments (+ a step counter per tensor)
    ],
)
def test_each_run_measures_its_optimizer_cost(optimizer: dict, state_bytes: float) -> None:

    spec = {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [16]}, "steps": 20}
    m = evaluate(spec, optimizer, 0).metrics()
    assert m["state_bytes_per_param"] == pytest.approx(state_bytes, abs=0.05)
    assert m["step_ms"] > 0 and 0 < m["step_ratio_vs_adam"] < float("inf")


def test_horizons_expand_like_a_grid_axis_each_its_own_trial() -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine.runner import trial_key
    from harness.registry import STAGES
    from harness.stages.base import run_local

    data = {
        "name": "h",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [
                    {"name": "quadratic_cos", "steps": [5, 12]},
                    {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [4]}, "epochs": [1, 2]},
                    {"name": "quadratic_cos", "label": "p1-default"},
                ],
                "optimizers": [{"family": "sgd", "lr": [0.01, 0.1]}, {"family": "adam", "lr": 0.01}],
                "seeds": [0, 1],
            }
        ],
    }
    suite = load_suite_dict(data)
    kind = STAGES.get("evaluate")
    trials = kind.plan(suite, suite.stages[0], {})
    assert len(trials) == 3 * (2 + 2 + 1) * 2  # optimizers x (optimizee, horizon) x seeds
    budgets = [(t.optimizee.display(), t.optimizee.steps, t.optimizee.epochs) for t in trials[::6]]
    assert budgets == [
        ("quadratic_cos", 5, None),
        ("quadratic_cos", 12, None),
        ("mlp(dataset=digits,hidden=[4])", None, 1.0),
        ("mlp(dataset=digits,hidden=[4])", None, 2.0),
        ("p1-default", None, None),
    ]
    keys = {trial_key("k", t) for t in trials}
    assert len(keys) == len(trials)  # the same optimizer and seed at two horizons: two trials
    tags = [kind.trial_tags(t) for t in (trials[0], trials[6], trials[12], trials[-1])]
    assert [t.get("horizon") for t in tags] == ["5 steps", "12 steps", "1 epoch", None]
    assert list(tags[0]) == ["optimizer", "optimizee", "horizon", "optimizer_family", "seed"]
    # each trial trains to its own horizon
    assert [run_local(kind, t).metrics["steps"] for t in (trials[0], trials[6])] == [5.0, 12.0]


def test_a_single_horizon_suite_plans_the_trials_it_always_did() -> None:
    """The trial dumps (and so the trial keys, and the stage key but for the code version) of a suite
    without a list of horizons are those of the code before horizons existed."""
    from harness.config.suite import load_suite_dict
    from harness.registry import STAGES

    data = {
        "name": "h",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 300}],
                "optimizers": [{"family": "adam", "lr": 0.01}],
            }
        ],
    }
    suite = load_suite_dict(data)
    (trial,) = STAGES.get("evaluate").plan(suite, suite.stages[0], {})
    assert trial.model_dump(mode="json") == {
        "optimizee": {"name": "quadratic_cos", "kwargs": {}, "steps": 300, "epochs": None, "label": None},
        "optimizer": {"family": "adam", "lr": 0.01},
        "seed": 0,
        "log_every": 10,
        "device": "auto",
    }


def test_one_run_refuses_a_list_of_horizons() -> None:
    with pytest.raises(ValueError, match=r"one training run has one horizon; got steps: \[5, 10\]"):
        evaluate({"name": "quadratic_cos", "steps": [5, 10]}, {"family": "adam", "lr": 0.01}, seed=0)


def test_an_entry_repeating_a_grid_config_runs_once_and_the_summary_says_so() -> None:
    from harness.config.suite import load_suite_dict
    from harness.stages.evaluate.kind import EvaluateKind, repeated_optimizers, resolve_optimizers
    from harness.stages.outputs import StageOutcome
    from search_spaces import load_grid

    data = {
        "name": "x",
        "stages": [
            {
                "name": "e",
                "kind": "evaluate",
                "optimizees": [{"name": "quadratic_cos", "steps": 10}],
                "optimizers": [{"grid": "smoke"}, {"family": "sgd", "lr": 0.1, "momentum": 0.9}],
            }
        ],
    }
    stage = load_suite_dict(data).stages[0]
    assert len(resolve_optimizers(stage, {})) == len(load_grid("smoke"))  # run once
    assert repeated_optimizers(stage) == ["sgd(lr=0.1,momentum=0.9)"]
    outcome = StageOutcome("e", "evaluate", "k", "r", False, [])
    (line,) = EvaluateKind().summary_lines(stage, outcome)
    assert (
        line.startswith("1 optimizer config(s) given more than once") and "sgd(lr=0.1,momentum=0.9)" in line
    )
