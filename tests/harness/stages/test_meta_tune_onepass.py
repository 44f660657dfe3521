"""One-pass meta-fine-tuning on a validation split: it repairs a bad step size, constants are free in sign
unless bounded, and neither tuning nor the tuned-versus-initial choice ever reads the test split."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import harness.stages.meta_tune.tune as tune_mod
from harness.stages.meta_tune import ConstantSlots, meta_tune, meta_tune_gradient, with_val_split
from harness.symbolic.families import eq6
from harness.symbolic.lang import Equation
from optimizees.classification import ClassificationOptimizee
from optimizees.quadratic import QuadraticCos

#: a small MLP on digits; 200 steps is its whole training run here (about 17 epochs of 12 batches)
MLP = {"name": "mlp", "kwargs": {"dataset": "digits", "hidden": [16], "batch_size": 64}, "steps": 200}
P1 = {"name": "quadratic_cos", "steps": 60}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def splits_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every split any optimizee's ``batches`` is asked for from now on (evaluate reads through it too)."""
    seen: list[str] = []
    for cls in (ClassificationOptimizee, QuadraticCos):
        real = cls.batches

        def batches(self: Any, split: str = "train", _real: Any = real) -> Any:
            seen.append(split)
            return _real(self, split)

        monkeypatch.setattr(cls, "batches", batches)
    return seen


def test_one_pass_repairs_a_step_size_ten_times_too_small(splits_read: list[str]) -> None:
    good, bad = eq6(("m_hat", "g_hat"), L=1, lr=1e-2), eq6(("m_hat", "g_hat"), L=1, lr=1e-3)
    res = meta_tune(bad, MLP, "gradient", unroll=5, meta_lr=0.1)
    assert res.details["kept"] == "tuned" and res.details["val_fraction"] == 0.1
    m = res.summary()
    assert m["val_loss_after"] < 0.3 * m["val_loss_before"] and m["val_acc_after"] > m["val_acc_before"] + 0.1
    # one training run: 40 windows of 5 steps, one meta step each
    assert [w["end_step"] for w in res.history["windows"]] == list(range(5, 201, 5))
    # the step size (the W's, 5e-4 each) grew several-fold towards the good rule's 5e-3
    w_bad, w_good = min(map(abs, bad.constants)), min(map(abs, good.constants))
    w_tuned = min(map(abs, res.equation.constants))
    assert w_tuned > 4 * w_bad and w_good == pytest.approx(10 * w_bad)
    assert "test" not in splits_read and "val" in splits_read


def test_optuna_and_selection_never_read_the_test_split(splits_read: list[str]) -> None:
    res = meta_tune(eq6(("m_hat",), L=1, lr=1e-3), MLP, "optuna", n_trials=3, eval_steps=20)
    assert "val_loss_after" in res.summary() and not any(k.startswith("test") for k in res.summary())
    assert "test" not in splits_read and "val" in splits_read
    # asked for, the test metrics are recorded for information
    res = meta_tune(eq6(("m_hat",), L=1, lr=1e-3), MLP, "optuna", n_trials=1, eval_steps=5, test_metrics=True)
    assert {"test_loss_before", "test_loss_after", "test_acc_after"} <= set(res.summary())


@pytest.mark.parametrize("val_better_for", ["initial", "tuned"])
def test_keep_better_compares_validation_not_test_loss(
    monkeypatch: pytest.MonkeyPatch, val_better_for: str
) -> None:
    """The choice follows the validation loss even when the test loss says the opposite."""
    initial = Equation.parse("-0.01*g_0")

    def fake_run_training(equation: Equation, optimizee: Any, seed: int, **kw: Any) -> dict[str, Any]:
        is_initial = equation.constants == initial.constants
        good = is_initial == (val_better_for == "initial")
        return {
            "steps": 1,
            "diverged": False,
            "final_train_loss": 1.0,
            "val_loss": 1.0 if good else 2.0,
            "test_loss": 2.0 if good else 1.0,
        }

    monkeypatch.setattr(tune_mod, "run_training", fake_run_training)
    res = meta_tune(initial, P1, "gradient", unroll=5, meta_lr=0.2, eval_seeds=[0, 1], test_metrics=True)
    assert res.details["kept"] == val_better_for
    assert res.equation.constants != initial.constants or val_better_for == "initial"
    assert (res.equation is res.initial_equation) == (val_better_for == "initial")
    assert res.summary()["kept_tuned"] == float(val_better_for == "tuned")


def test_a_constant_changes_sign_when_free_and_cannot_when_bounded() -> None:
    eq = Equation.parse("-0.01*m_hat_0 + 0.003*g_hat_0")  # the g_hat term points uphill
    i = eq.constants.index(0.003)
    free, _ = meta_tune_gradient(eq, P1, unroll=3, meta_lr=0.1)
    bounded, hist = meta_tune_gradient(eq, P1, unroll=3, meta_lr=0.1, max_multiplier=10.0)
    assert free.constants[i] < 0
    assert 0.003 / 10 - 1e-12 <= bounded.constants[i] < 0.003  # shrunk, within [c/r, c*r], sign kept
    assert all(w["constants"][i] > 0 for w in hist["windows"])


def test_constant_slots_parameterisation() -> None:
    eq = Equation.parse("-0.0001*g_0 + 0.0*m_hat_0 - 1.0*g_hat_0")
    slots = ConstantSlots(eq)
    assert slots.values() == pytest.approx(list(eq.constants))  # u = 0 is the equation as given
    with torch.no_grad():
        slots.raw.fill_(0.5)
    after = slots.values()
    for c0, c in zip(eq.constants, after, strict=True):
        if c0:  # the same relative move for a constant of 1e-4 and one of 1
            assert c / c0 == pytest.approx(math.sinh(math.asinh(1.0) + 0.5))
        else:  # a zero constant moves on the scale of the smallest nonzero one
            assert c == pytest.approx(1e-4 * math.sinh(0.5))
    bounded = ConstantSlots(eq, max_multiplier=2.0)
    with torch.no_grad():
        bounded.raw.fill_(5.0)
    bounded.project()
    for c0, c in zip(eq.constants, bounded.values(), strict=True):
        assert c == pytest.approx(2.0 * c0)  # clamped to the bound; zero stays zero


def test_with_val_split_sets_only_the_tuning_optimizee() -> None:
    spec = {"name": "mlp", "kwargs": {"dataset": "digits"}, "steps": 10}
    tuned = with_val_split(spec, 0.2)
    assert tuned["kwargs"] == {"dataset": "digits", "val_fraction": 0.2}
    assert spec["kwargs"] == {"dataset": "digits"}  # the caller's spec (and later stages') is untouched
    own = {"name": "mlp", "kwargs": {"val_fraction": 0.3}}
    assert with_val_split(own, 0.1)["kwargs"]["val_fraction"] == 0.3  # the spec's own choice wins
    assert with_val_split(spec, None) == spec
    assert with_val_split({"name": "quadratic_cos"}, 0.1) == {"name": "quadratic_cos"}  # takes none


def test_a_validation_run_trains_on_train_and_scores_on_val_only(tmp_path, splits_read: list[str]) -> None:
    """``validation_run`` (how benchmarks choose among rules): the same figures as the tuning loop's own
    training run, read from the equation's file, and never a look at the test split."""
    from harness.stages.meta_tune.common import run_training, validation_run

    eq = Equation.parse("-0.1*g_0")
    path = eq.save(tmp_path / "rule.json")
    target = with_val_split(MLP, 0.2)
    got = validation_run(str(path), target, seed=3, steps=30)
    assert set(splits_read) == {"train", "val"}
    want = run_training(eq, target, 3, steps=30)
    assert got == {
        "train_loss": want["final_train_loss"],
        "val_acc": want["val_acc"],
        "val_loss": want["val_loss"],
    }
    assert math.isfinite(got["train_loss"]) and 0.0 < got["val_acc"] <= 1.0


def test_eta_parameters_are_tuned_with_the_constants_and_saved(tmp_path) -> None:
    from harness.stages.meta_tune import write_outputs
    from harness.symbolic.optim.optimizer import load_equation

    eq = eq6(("m_hat", "g_hat", "eta"), L=1, lr=1e-3)
    start = list(eq.provenance["feature_spec"]["eta_params"])
    tuned, hist = meta_tune_gradient(eq, with_val_split(MLP, 0.1), steps=60, unroll=5, meta_lr=0.05)
    got = tuned.provenance["feature_spec"]["eta_params"]
    assert len(got) == 6 and got != start and all(math.isfinite(v) for v in got)
    assert hist["windows"][-1]["eta_params"] == pytest.approx(got)
    assert abs(got[2]) <= 0.5 and abs(got[5]) <= 0.5  # a1, a2 stay where the feature does not clip them
    assert eq.provenance["feature_spec"]["eta_params"] == start  # the input equation is untouched
    frozen, _ = meta_tune_gradient(
        eq, with_val_split(MLP, 0.1), steps=20, unroll=5, meta_lr=0.05, tune_features=False
    )
    assert frozen.provenance["feature_spec"]["eta_params"] == start and frozen.constants != eq.constants
    # the tuned parameters travel with the saved equation, and a SymbolicOptimizer uses them
    res = meta_tune(eq, MLP, "gradient", steps=20, unroll=5, keep="tuned")
    files = write_outputs(res, tmp_path)
    loaded = load_equation(files["equation.json"])
    assert (
        loaded.provenance["feature_spec"]["eta_params"]
        == res.equation.provenance["feature_spec"]["eta_params"]
    )


def test_a_tuned_rule_stays_zero_at_zero() -> None:
    from harness.stages.meta_tune.tune import _keep_zero_at_zero
    from harness.symbolic.sr.offset import value_at_zero, zero_at_zero

    # -0.01*(tanh(m_hat_0 + 1) + k), k = -tanh(1): zero at zero; tuning k apart from its term would drift
    initial = zero_at_zero(Equation.parse("-0.01*tanh(m_hat_0 + 1.0)"))
    assert initial is not None and value_at_zero(initial) == 0.0
    k = min(range(initial.n_constants), key=lambda i: abs(initial.constants[i] + math.tanh(1.0)))
    drifting = initial.with_constants([c * 1.1 if i == k else c for i, c in enumerate(initial.constants)])
    assert value_at_zero(drifting) != 0.0
    fixed, drift = _keep_zero_at_zero(initial, drifting)
    assert drift == pytest.approx(value_at_zero(drifting)) and abs(value_at_zero(fixed)) <= 1e-15
    same, none = _keep_zero_at_zero(initial, initial)
    assert same is initial and none == 0.0
