"""The meta_tune stage: gradient meta-steps, Optuna (TPE, CMA-ES, sqlite resume), objective, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.stages.meta_tune import (
    DIVERGED_PENALTY,
    constant_slots,
    constants_from_values,
    evaluate_constants,
    meta_tune,
    meta_tune_gradient,
    meta_tune_optuna,
    optuna_search_space,
    write_outputs,
)
from harness.stages.meta_tune.common import ASINH1, signed_multiplier
from harness.stages.meta_tune.gradient import ConstantSlots
from harness.stages.problems import build_problem
from harness.symbolic.families import adam_equation, eq6, sgd_equation
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import functional_step, init_functional_state
from harness.training.unroll import loss_and_grads, unroll

P1 = {"name": "quadratic_cos", "steps": 30}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_gradient_meta_step_lowers_the_val_loss_on_p1() -> None:
    eq = adam_equation(lr=1e-2)
    problem = build_problem(P1, seed=0)
    module = eq.compile()
    params = problem.init_params()
    state = init_functional_state(eq, params)
    batches = [next(problem.batches("train")) for _ in range(11)]
    _, g0 = loss_and_grads(problem.loss, params, batches[0])
    hold = next(problem.batches("val"))
    consts = ConstantSlots(eq)

    def meta() -> torch.Tensor:
        kw = consts.step_kwargs()
        res = unroll(
            lambda p, g, st: functional_step(module, p, g, st, **kw),
            problem.loss,
            params,
            state,
            g0,
            batches[1:],
            meta_loss="final",
            holdout=hold,
        )
        assert res.meta_loss is not None and len(res.train_losses) == 10
        return res.meta_loss

    before = meta()
    before.backward()
    assert consts.raw.grad is not None and float(consts.raw.grad[0]) != 0.0
    opt = torch.optim.Adam([consts.raw], lr=0.1)
    opt.step()
    with torch.no_grad():
        after = meta()
    assert float(after.detach()) < float(before.detach())


def test_meta_tune_gradient_runs_online_and_keeps_provenance() -> None:
    eq = eq6(("m_hat", "g_hat"), L=2, lr=1e-2)
    tuned, hist = meta_tune_gradient(eq, P1, unroll=5, meta_lr=0.1, seed=1)
    assert hist["step"] == list(range(1, 31)) and len(hist["train_loss"]) == 30
    assert [w["end_step"] for w in hist["windows"]] == [5, 10, 15, 20, 25, 30]
    assert hist["holdout"] == "val" and all(math.isfinite(w["val_loss"]) for w in hist["windows"])
    assert tuned.template == eq.template and tuned.constants != eq.constants
    assert tuned.provenance["feature_spec"] == eq.provenance["feature_spec"]
    assert tuned.provenance["meta_tune"]["method"] == "gradient"
    assert "meta_tune" not in eq.provenance  # the input equation is left alone
    (tie,) = tuned.provenance["tie_groups"]
    assert len({tuned.constants[i] for i in tie}) == 1  # gamma stays shared
    # the 'mean' meta-loss works too; a bad setting is refused
    _, hist2 = meta_tune_gradient(eq, P1, steps=10, unroll=5, meta_loss="mean")
    assert len(hist2["windows"]) == 2 and all(math.isfinite(w["val_loss"]) for w in hist2["windows"])
    with pytest.raises(ValueError, match="meta_loss"):
        meta_tune_gradient(eq, P1, meta_loss="last")
    with pytest.raises(ValueError, match="max_multiplier"):
        meta_tune_gradient(eq, P1, max_multiplier=0.5)


def test_search_space_slots_and_objective() -> None:
    eq = eq6(("m_hat",), L=2)
    slots = constant_slots(eq)
    assert len(slots) == 3 and slots[0] == eq.provenance["tie_groups"][0]
    space = optuna_search_space(eq, space="log_multipliers")
    assert sorted(space) == ["u0", "u1", "u2"]
    assert space["u0"].low == pytest.approx(-math.log(10))
    consts = constants_from_values(eq, {"u0": math.log(2.0)}, space="log_multipliers")
    assert all(consts[i] == pytest.approx(2 * eq.constants[i]) for i in slots[0])
    # the default 'signed' space: multipliers sinh(asinh(1) + v), from -1.57 to 10, so a slot can change sign
    signed = optuna_search_space(eq)
    assert sorted(signed) == ["v0", "v1", "v2"] and signed["v1"].low == -signed["v1"].high
    assert signed_multiplier(signed["v1"].high) == pytest.approx(10.0)
    assert signed_multiplier(signed["v1"].low) == pytest.approx(math.sinh(2 * ASINH1 - math.asinh(10)))
    assert constants_from_values(eq, {"v1": 0.0}) == pytest.approx(list(eq.constants))
    flipped = constants_from_values(eq, {"v1": -2 * ASINH1})  # multiplier sinh(-asinh(1)) = -1
    assert [i for i, (a, b) in enumerate(zip(flipped, eq.constants, strict=True)) if a != b] == slots[1]
    assert flipped[slots[1][0]] == pytest.approx(-eq.constants[slots[1][0]])

    sgd = sgd_equation(0.01)
    ok = evaluate_constants(sgd, {"v0": 0.0}, P1, seeds=[0, 1], eval_steps=10)
    assert math.isfinite(ok) and ok < DIVERGED_PENALTY
    assert evaluate_constants(sgd, [-1e4], P1, eval_steps=50) == DIVERGED_PENALTY


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_optuna_tiny_budget(sampler: str) -> None:
    tuned, summary = meta_tune_optuna(
        eq6(("m_hat",), L=1, lr=1e-2), P1, n_trials=5, sampler=sampler, eval_steps=15
    )
    assert summary["n_trials"] == 5 and summary["n_new_trials"] == 5
    assert summary["best_value"] <= summary["start_value"]
    assert tuned.provenance["meta_tune"]["sampler"] == sampler
    assert evaluate_constants(tuned, list(tuned.constants), P1, eval_steps=15) == pytest.approx(
        summary["best_value"], rel=1e-6
    )


def test_optuna_resumes_from_sqlite(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kw = {"storage": storage, "study_name": "resume", "eval_steps": 10, "sampler": "cmaes"}
    _, first = meta_tune_optuna(sgd_equation(0.01), P1, n_trials=3, **kw)
    assert first["n_new_trials"] == 3
    tuned, second = meta_tune_optuna(sgd_equation(0.01), P1, n_trials=5, **kw)
    assert second["n_new_trials"] == 2 and second["n_trials"] == 5
    assert second["best_value"] <= first["best_value"]
    _, third = meta_tune_optuna(sgd_equation(0.01), P1, n_trials=5, **kw)
    assert third["n_new_trials"] == 0


def test_stage_and_outputs(tmp_path) -> None:
    res = meta_tune(sgd_equation(0.005), P1, "gradient", unroll=5, meta_lr=0.2, seed=0)
    assert res.method == "gradient" and res.before["val_loss"] > res.after["val_loss"]
    assert "test_loss" not in res.before  # the test split is not read unless asked for
    summary = res.summary()
    assert summary["val_loss_before"] == res.before["val_loss"] and summary["val_loss_improvement"] > 0
    assert summary["kept_tuned"] == 1.0 and not any(k.startswith(("heldout", "test_")) for k in summary)
    paths = write_outputs(res, tmp_path)
    assert set(paths) == {"equation.json", "history.json", "equation.tex"} and all(
        p.name in paths for p in paths.values()
    )
    assert Equation.load(paths["equation.json"]) == res.equation
    doc = json.loads(paths["history.json"].read_text())
    assert doc["before"]["val_loss"] == res.before["val_loss"] and len(doc["history"]["windows"]) == 6
    res2 = meta_tune(adam_equation(1e-2), P1, "optuna", n_trials=3, eval_steps=10, test_metrics=True)
    assert res2.details["n_trials"] == 3 and res2.summary()["n_trials"] == 3
    assert {"val_loss_after", "test_loss_before", "test_loss_after"} <= set(res2.summary())
    with pytest.raises(ValueError, match="method"):
        meta_tune(adam_equation(), P1, "bayes")
