"""The hpo stage: its search space, one proposal's objective on the validation split, and the choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config.suite import load_suite_dict
from harness.stages.base import LocalContext, run_local
from harness.stages.hpo.kind import HpoKind, HpoStage
from harness.stages.hpo.names import CHOSEN_FILE, RULE_FILE
from harness.stages.hpo.objective import evaluate_config
from harness.stages.hpo.select import select
from harness.stages.hpo.space import distributions, proposal_config
from harness.stages.meta_tune.common import DIVERGED_PENALTY
from harness.stages.outputs import STATUS_STOPPED, StageOutcome, TrialOutput, tag
from harness.symbolic.families import sgd_equation
from search_spaces import load_space

pytestmark = pytest.mark.usefixtures("one_thread")
TARGET = {"name": "logreg", "kwargs": {"dataset": "digits", "max_train": 300}, "steps": 15}


def _stage(**kw) -> HpoStage:
    return HpoStage.model_validate({"kind": "hpo", "name": "h", "optimizee": TARGET, "space": "adam", **kw})


def test_a_proposal_is_a_concrete_config() -> None:
    adam = load_space("adam")
    cfg = proposal_config(
        {"family": "adam"}, adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "schedule": "cosine"}
    )
    assert cfg == {"family": "adam", "lr": 0.01, "betas": [0.8, 0.99], "schedule": "cosine"}
    sgd = proposal_config(
        {"family": "sgd", "nesterov": True}, load_space("sgd"), {"lr": 0.1, "momentum": 0.0}
    )
    assert sgd["nesterov"] is False  # torch refuses Nesterov without momentum
    assert set(distributions(adam)) == {"lr", "beta1", "beta2", "weight_decay", "schedule", "warmup"}


def test_stage_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown search space 'adamw'.*known spaces: adam, rule, sgd"):
        _stage(space="adamw")
    with pytest.raises(
        ValidationError, match="space 'rule' tunes a symbolic rule: give exactly one of from_stage"
    ):
        _stage(space="rule")
    with pytest.raises(
        ValidationError, match="space 'adam' tunes adam; from_stage/equation are for rule spaces"
    ):
        _stage(from_stage="eq6")
    with pytest.raises(ValidationError, match="fixed.family is set by the stage"):
        _stage(fixed={"family": "sgd"})
    with pytest.raises(ValidationError, match="at most 10000|less than or equal to 10000"):
        _stage(n_trials=20_000)
    stage = _stage(n_trials=5, seeds=[0, 1, 2])
    assert stage.budget() == {"tuning_trainings": 15.0, "tuning_steps": 225.0}
    assert stage.budget(2) == {"tuning_trainings": 6.0, "tuning_steps": 90.0}


def test_the_objective_is_the_validation_loss_and_a_diverged_run_ranks_last() -> None:
    from harness.stages.hpo.objective import tuning_target

    target = tuning_target(TARGET, 0.2)
    assert target["kwargs"]["val_fraction"] == 0.2
    ok = evaluate_config({"family": "adam", "lr": 0.01}, target, [0, 1])
    assert (
        ok["objective"] == pytest.approx(ok["val_loss"]) and ok["diverged"] == 0.0 and 0 < ok["val_acc"] <= 1
    )
    by_train = evaluate_config({"family": "adam", "lr": 0.01}, target, [0, 1], objective="final_train_loss")
    assert by_train["objective"] == pytest.approx(by_train["final_train_loss"])
    bad = evaluate_config({"family": "sgd", "lr": math.inf}, target, [0])  # inf steps: NaN parameters
    assert bad["diverged"] == 1.0 and bad["objective"] == DIVERGED_PENALTY
    with pytest.raises(
        ValueError, match="unknown objective 'test_loss'; use one of val_loss, final_train_loss"
    ):
        evaluate_config({"family": "adam", "lr": 0.01}, target, [0], objective="test_loss")


def test_a_searched_trial_runs_one_proposal_on_every_tuning_seed(tmp_path: Path) -> None:
    kind = HpoKind()
    eq = sgd_equation(0.1).save(tmp_path / "rule.json")
    stage = _stage(space="rule", equation=str(eq), n_trials=3, seeds=[0, 1])
    (base,) = kind.plan(None, stage, {})  # type: ignore[arg-type]
    assert base.base == {"family": "symbolic", "equation": str(eq.resolve())}
    search = kind.search(stage, [base])
    assert search is not None and search.num_samples == 3 and search.metric == "objective"
    assert search.start == [{"lr_mult": 1.0, "schedule": "constant", "warmup": 0.0}]
    trial = kind.searched_trial(base, {"lr_mult": 2.0, "schedule": "linear", "warmup": 0.1}, 4)
    ctx = LocalContext(tmp_path / "out")
    res = run_local(kind, trial, ctx)
    assert res.metrics["search_index"] == 4.0 and math.isfinite(res.metrics["objective"])
    assert ctx.steps == []  # no interim report: Tune's searcher would take it for the proposal's result
    config = json.loads(res.info["optimizer_config"])
    assert config == {**base.base, "lr_mult": 2.0, "schedule": "linear", "warmup": 0.1}
    assert json.loads(res.info["search_params"]) == {"lr_mult": 2.0, "schedule": "linear", "warmup": 0.1}


def _trial(index: int, value: float, config: dict, status: str = "ok") -> TrialOutput:
    return TrialOutput(
        run_id=f"r{index}",
        config={},
        tags={
            tag("search_params"): json.dumps({"lr": config.get("lr")}),
            tag("optimizer_config"): json.dumps(config),
            tag("status"): status,
        },
        metrics={"objective": value, "search_index": float(index)},
        artifacts=None,
    )


def test_select_takes_the_lowest_objective_never_a_stopped_proposal(tmp_path: Path) -> None:
    stage = _stage(n_trials=4, seeds=[0, 1])
    outcome = StageOutcome("h", "hpo", "k", "run", False)
    outcome.trials = [
        _trial(0, 0.5, {"family": "adam", "lr": 0.001}),
        _trial(1, 0.2, {"family": "adam", "lr": 0.01}, status=STATUS_STOPPED),  # partial: never chosen
        _trial(2, 0.3, {"family": "adam", "lr": 0.003}),
        _trial(3, 0.3, {"family": "adam", "lr": 0.03}),  # a tie: the earlier proposal wins
    ]
    lines: list[str] = []
    select(stage, outcome, tmp_path, lines.append)
    assert outcome.extra["chosen"] == {"family": "adam", "lr": 0.003}
    m = outcome.extra["metrics"]
    assert m["best_objective"] == 0.3 and m["best_index"] == 2.0 and m["n_trials"] == 3.0
    assert m["tuning_trainings"] == 6.0 and m["tuning_steps"] == 90.0
    doc = json.loads((tmp_path / CHOSEN_FILE).read_text())
    assert doc["config"] == {"family": "adam", "lr": 0.003} and len(doc["proposals"]) == 3
    assert "best of 3 proposals: #2" in lines[0]


def test_a_chosen_rule_is_copied_beside_the_choice(tmp_path: Path) -> None:
    eq = sgd_equation(0.1).save(tmp_path / "rule.json")
    stage = _stage(space="rule", equation=str(eq), n_trials=1, seeds=[0])
    outcome = StageOutcome("h", "hpo", "k", "run", False)
    outcome.trials = [_trial(0, 0.4, {"family": "symbolic", "equation": str(eq), "lr_mult": 2.0})]
    out = tmp_path / "stage"
    out.mkdir()
    select(stage, outcome, out, lambda _: None)
    assert outcome.extra["chosen"]["equation"] == str((out / RULE_FILE).resolve())
    assert (out / RULE_FILE).read_text() == eq.read_text()


def test_an_evaluate_stage_runs_an_hpo_choice_and_checks_the_reference() -> None:
    base = {
        "name": "s",
        "stages": [
            {"kind": "hpo", "name": "tune-adam", "optimizee": TARGET, "space": "adam", "n_trials": 2},
            {
                "kind": "evaluate",
                "name": "eval",
                "optimizees": [{**TARGET, "steps": [15, 75]}],
                "optimizers": [{"tuned": "tune-adam", "name": "adam-tuned"}],
            },
        ],
    }
    suite = load_suite_dict(base)
    assert suite.stage("eval").inputs() == [("tune-adam", ("hpo",))]
    wrong = json.loads(json.dumps(base))
    wrong["stages"][0] = {
        "kind": "evaluate",
        "name": "tune-adam",
        "optimizees": [TARGET],
        "optimizers": [{"family": "adam", "lr": 0.1}],
    }
    with pytest.raises(ValueError, match="tune-adam"):
        load_suite_dict(wrong)
