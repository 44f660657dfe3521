"""The meta_tune stage: gradient meta-steps, Optuna (TPE, CMA-ES, sqlite resume), objective, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.stages.meta_tune import (
    DIVERGED_PENALTY,
    build_problem,
    constant_slots,
    constants_from_values,
    evaluate_constants,
    meta_tune,
    meta_tune_gradient,
    meta_tune_optuna,
    optuna_search_space,
    unrolled_meta_loss,
    write_outputs,
)
from harness.stages.meta_tune.gradient import _slot_constants
from harness.symbolic.equation import Equation
from harness.symbolic.families import adam_equation, eq6, sgd_equation
from harness.symbolic.optimizer import init_functional_state

P1 = {"name": "quadratic_cos", "steps": 30}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_one_gradient_meta_step_lowers_the_heldout_loss_on_p1() -> None:
    eq = adam_equation(lr=1e-2)
    problem = build_problem(P1, seed=0)
    module = eq.compile()
    params = problem.init_params()
    state = init_functional_state(eq, params)
    batches = [next(problem.batches("train")) for _ in range(10)]
    hold = next(problem.batches("test"))
    slots = constant_slots(eq)
    u = torch.zeros(len(slots), requires_grad=True)

    def meta() -> torch.Tensor:
        consts = _slot_constants(list(eq.constants), slots, u)
        return unrolled_meta_loss(module, problem, params, state, batches, hold, constants=consts)[0]

    before = meta()
    before.backward()
    assert u.grad is not None and float(u.grad[0]) != 0.0
    opt = torch.optim.Adam([u], lr=0.1)
    opt.step()
    with torch.no_grad():
        after = meta()
    assert float(after.detach()) < float(before.detach())


def test_meta_tune_gradient_runs_online_and_keeps_provenance() -> None:
    eq = eq6(("m_hat", "g_hat"), L=2, lr=1e-2)
    tuned, hist = meta_tune_gradient(eq, P1, unroll=5, meta_lr=0.1, seed=1)
    assert hist["step"] == list(range(1, 31)) and len(hist["train_loss"]) == 30
    assert [w["end_step"] for w in hist["windows"]] == [5, 10, 15, 20, 25, 30]
    assert tuned.template == eq.template and tuned.constants != eq.constants
    assert tuned.provenance["feature_spec"] == eq.provenance["feature_spec"]
    assert tuned.provenance["meta_tune"]["method"] == "gradient"
    (tie,) = tuned.provenance["tie_groups"]
    assert len({tuned.constants[i] for i in tie}) == 1  # gamma stays shared
    # the 'mean' meta-loss and a test-batch hold-out work too
    tuned2, hist2 = meta_tune_gradient(eq, P1, steps=10, unroll=5, meta_loss="mean", holdout="test")
    assert len(hist2["windows"]) == 2 and all(math.isfinite(w["heldout_loss"]) for w in hist2["windows"])


def test_search_space_slots_and_objective() -> None:
    eq = eq6(("m_hat",), L=2)
    slots = constant_slots(eq)
    assert len(slots) == 3 and slots[0] == eq.provenance["tie_groups"][0]
    space = optuna_search_space(eq)
    assert sorted(space) == ["u0", "u1", "u2"]
    assert space["u0"].low == pytest.approx(-math.log(10))
    consts = constants_from_values(eq, {"u0": math.log(2.0)})
    assert all(consts[i] == pytest.approx(2 * eq.constants[i]) for i in slots[0])
    raw = optuna_search_space(adam_equation(), space="constants")
    assert raw["c0"].low == pytest.approx(-1e-2) and raw["c0"].high == pytest.approx(-1e-4)

    sgd = sgd_equation(0.01)
    ok = evaluate_constants(sgd, {"u0": 0.0}, P1, seeds=[0, 1], eval_steps=10)
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
    assert res.method == "gradient" and res.before["test_loss"] > res.after["test_loss"]
    summary = res.summary()
    assert summary["heldout_before"] == res.before["test_loss"] and summary["heldout_improvement"] > 0
    paths = write_outputs(res, tmp_path)
    assert set(paths) == {"equation.json", "history.json", "equation.tex"} and all(
        p.name in paths for p in paths.values()
    )
    assert Equation.load(paths["equation.json"]) == res.equation
    doc = json.loads(paths["history.json"].read_text())
    assert doc["before"]["test_loss"] == res.before["test_loss"] and len(doc["history"]["windows"]) == 6
    res2 = meta_tune(adam_equation(1e-2), P1, "optuna", n_trials=3, eval_steps=10)
    assert res2.details["n_trials"] == 3 and res2.summary()["n_trials"] == 3
    assert "heldout_after" in res2.summary()
    with pytest.raises(ValueError, match="method"):
        meta_tune(adam_equation(), P1, "bayes")
