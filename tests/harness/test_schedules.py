"""Step-size schedules: one definition for the grid's ``cosine: true``, a symbolic rule that carries a
schedule, and the meta-tuning that tunes and selects the rule under it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import harness.stages.meta_tune.gradient as gradient_mod
from harness.stages.evaluate import evaluate
from harness.stages.meta_tune import meta_tune, meta_tune_gradient, run_training
from harness.stages.meta_tune.common import with_schedule
from harness.symbolic.families import sgd_equation
from harness.training.optimizers import build_optimizer
from harness.training.schedules import SCHEDULES, equation_schedule, lr_factor

P1 = {"name": "quadratic_cos", "steps": 23}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_factor_constant_and_cosine() -> None:
    assert SCHEDULES == ("constant", "cosine", "linear")
    assert [lr_factor("constant", t, 10) for t in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0) and lr_factor("cosine", 12, 10) == pytest.approx(
        0.0
    )
    with pytest.raises(ValueError, match="unknown schedule 'step'; use one of constant, cosine, linear"):
        lr_factor("step", 0, 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        equation_schedule({"schedule": "step"})


def _lrs(opt: torch.optim.Optimizer, sched: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_a_rule_that_carries_cosine_is_scheduled_once(tmp_path) -> None:
    plain = sgd_equation(0.1).save(tmp_path / "plain.json")
    carried = with_schedule(sgd_equation(0.1), "cosine").save(tmp_path / "cos.json")
    want = [lr_factor("cosine", t, 8) for t in range(8)]
    for spec, expect in [
        ({"family": "symbolic", "equation": str(plain)}, [1.0] * 8),
        ({"family": "symbolic", "equation": str(plain), "cosine": True}, want),
        ({"family": "symbolic", "equation": str(carried)}, want),
        ({"family": "symbolic", "equation": str(carried), "cosine": True}, want),  # not cos**2
        ({"family": "sgd", "lr": 1.0, "cosine": True}, want),
    ]:
        opt, sched = build_optimizer(spec, [torch.nn.Parameter(torch.zeros(3))], 8)
        assert _lrs(opt, sched, 8) == pytest.approx(expect), spec


def test_with_schedule_keeps_the_rule_and_none_keeps_what_it_carries() -> None:
    eq = sgd_equation(0.1)
    cos = with_schedule(eq, "cosine")
    assert cos.text == eq.text and cos.provenance["schedule"] == "cosine" and "schedule" not in eq.provenance
    assert (
        with_schedule(cos, None) is cos
        and with_schedule(cos, "constant").provenance["schedule"] == "constant"
    )
    with pytest.raises(ValueError, match="unknown schedule"):
        with_schedule(eq, "warmup")


def test_training_under_a_carried_schedule_is_the_grid_schedule(tmp_path) -> None:
    """``run_training`` (tuning and selection) and ``evaluate`` (the leaderboard) give a rule that carries
    cosine the same run as ``cosine: true`` on the plain rule."""
    plain, carried = sgd_equation(0.05), with_schedule(sgd_equation(0.05), "cosine")
    a = run_training(carried, P1, 3, splits=())["final_train_loss"]
    b = evaluate(
        P1, {"family": "symbolic", "equation": str(plain.save(tmp_path / "p.json")), "cosine": True}, 3
    )
    c = run_training(plain, P1, 3, splits=())["final_train_loss"]
    assert math.isfinite(a) and a == pytest.approx(b.final_train_loss, rel=1e-6) and a != c


def test_the_one_pass_tuner_steps_under_the_rule_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training step of the tuning run gets the schedule's factor at its own index, across windows."""
    seen: list[float] = []
    real = gradient_mod.functional_step

    def spy(*args: Any, lr: float = 1.0, **kw: Any) -> Any:
        seen.append(lr)
        return real(*args, lr=lr, **kw)

    monkeypatch.setattr(gradient_mod, "functional_step", spy)
    meta_tune_gradient(with_schedule(sgd_equation(0.05), "cosine"), P1, unroll=5, meta_lr=0.0)
    assert seen == pytest.approx([lr_factor("cosine", t, 23) for t in range(23)])
    seen.clear()
    meta_tune_gradient(sgd_equation(0.05), P1, unroll=5, meta_lr=0.0)
    assert seen == [1.0] * 23


def test_meta_tune_schedule_setting_reaches_the_output() -> None:
    res = meta_tune(sgd_equation(0.05), P1, "gradient", unroll=5, meta_lr=0.05, schedule="cosine")
    assert res.equation.provenance["schedule"] == "cosine"
    assert res.initial_equation.provenance["schedule"] == "cosine"  # selected under the same schedule


def test_linear_decay_and_warmup() -> None:
    assert [lr_factor("linear", t, 10) for t in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    # 2 warm-up steps of 10: 1/2, 2/2, then the decay over the remaining 8 steps
    assert [lr_factor("constant", t, 10, 0.2) for t in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert [lr_factor("linear", t, 10, 0.2) for t in (0, 1, 2, 6, 10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5, 0.0]
    )
    assert lr_factor("cosine", 6, 10, 0.2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"warmup is a fraction of the run in \[0, 0.5\], got 0.9"):
        lr_factor("cosine", 0, 10, 0.9)


def test_config_schedule_and_warmup_reach_every_family(tmp_path) -> None:
    carried = with_schedule(sgd_equation(1.0), "cosine")
    carried.provenance["warmup"] = 0.25
    path = carried.save(tmp_path / "carried.json")
    want = [lr_factor("linear", t, 8, 0.25) for t in range(8)]
    for spec in (
        {"family": "sgd", "lr": 1.0, "schedule": "linear", "warmup": 0.25},
        {"family": "adam", "lr": 1.0, "schedule": "linear", "warmup": 0.25},
        # the config's schedule wins over the one the rule carries
        {"family": "symbolic", "equation": str(path), "schedule": "linear", "warmup": 0.25},
    ):
        opt, sched = build_optimizer(spec, [torch.nn.Parameter(torch.zeros(3))], 8)
        assert _lrs(opt, sched, 8) == pytest.approx(want), spec
    opt, sched = build_optimizer(
        {"family": "symbolic", "equation": str(path)}, [torch.nn.Parameter(torch.zeros(3))], 8
    )
    assert _lrs(opt, sched, 8) == pytest.approx([lr_factor("cosine", t, 8, 0.25) for t in range(8)])
    with pytest.raises(ValueError, match="cosine: true contradicts schedule: linear"):
        build_optimizer({"family": "sgd", "lr": 1.0, "cosine": True, "schedule": "linear"}, [], 8)


def test_suite_optimizer_entries_take_schedule_and_warmup() -> None:
    from pydantic import ValidationError

    from harness.config.suite import AdamSpec, SGDSpec

    assert (
        SGDSpec.model_validate({"family": "sgd", "lr": 0.1, "schedule": "linear", "warmup": 0.1}).warmup
        == 0.1
    )
    with pytest.raises(ValidationError, match="cosine: true contradicts schedule: constant"):
        AdamSpec.model_validate({"family": "adam", "lr": 0.1, "cosine": True, "schedule": "constant"})
    with pytest.raises(ValidationError, match="less than or equal to 0.5"):
        AdamSpec.model_validate({"family": "adam", "lr": 0.1, "warmup": 0.8})
