"""The shared unrolled loop: first-order truncated BPTT, its meta-losses, and that both callers run it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import harness.stages.meta_tune.gradient as gradient_mod
import teachers.meta_train as meta_train_mod
from harness.registry import OPTIMIZEES
from harness.symbolic.families import sgd_equation
from harness.training.unroll import Unrolled, loss_and_grads, unroll
from teachers.meta_train import MetaTrainConfig, MetaTrainer

P1 = {"name": "quadratic_cos", "steps": 12}


pytestmark = pytest.mark.usefixtures("one_thread")


def _p1():
    return OPTIMIZEES.get("quadratic_cos")(seed=3)


def _sgd(lr: torch.Tensor):
    def step(p, g, st):
        return {k: v - lr * g[k] for k, v in p.items()}, st + 1

    return step


def test_mean_meta_loss_is_eq1_first_order_and_its_gradient_matches_a_hand_written_loop() -> None:
    problem = _p1()
    x0 = problem.init_params()
    batches = problem.batches("train")
    _, g0 = loss_and_grads(problem.loss, x0, next(batches))
    lr = torch.tensor(0.01, requires_grad=True)
    res = unroll(_sgd(lr), problem.loss, x0, 0, g0, itertools.islice(batches, 4), meta_loss="mean")
    assert isinstance(res, Unrolled) and res.state == 4 and len(res.train_losses) == 4 and not res.diverged
    assert res.meta_loss is not None
    assert float(res.meta_loss.detach()) == pytest.approx(sum(res.train_losses) / 4, rel=1e-6)
    (got,) = torch.autograd.grad(res.meta_loss, [lr])

    # by hand: x_k = x_{k-1} - lr * g_{k-1}, gradients detached, mean of f(x_1..x_4)
    lr2 = torch.tensor(0.01, requires_grad=True)
    x = x0["x"].detach()
    g = g0["x"]
    terms = []
    for _ in range(4):
        x = x - lr2 * g
        f = problem.loss({"x": x}, None)
        terms.append(f)
        leaf = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss({"x": leaf}, None), [leaf])
    (want,) = torch.autograd.grad(torch.stack(terms).mean(), [lr2])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(res.params["x"], x.detach())
    torch.testing.assert_close(res.grads["x"], g)
    assert not res.params["x"].requires_grad


def test_final_holdout_none_and_divergence() -> None:
    problem = _p1()
    x0 = problem.init_params()
    _, g0 = loss_and_grads(problem.loss, x0, None)
    lr = torch.tensor(0.01, requires_grad=True)
    hold = next(problem.batches("val"))
    res = unroll(_sgd(lr), problem.loss, x0, 0, g0, [None] * 3, meta_loss="final", holdout=hold)
    assert res.meta_loss is not None
    assert float(res.meta_loss.detach()) == pytest.approx(float(problem.loss(res.params, hold)))
    assert res.meta_loss.requires_grad
    # no meta-loss: nothing keeps a graph
    plain = unroll(_sgd(lr), problem.loss, x0, 0, g0, [None] * 3, meta_loss=None)
    assert plain.meta_loss is None and plain.train_losses == pytest.approx(res.train_losses)
    # a huge step diverges: the window stops at the first non-finite loss
    big = torch.tensor(1e30)
    bad = unroll(_sgd(big), problem.loss, x0, 0, g0, [None] * 5, meta_loss="mean")
    assert bad.diverged and len(bad.train_losses) < 5 and not math.isfinite(bad.train_losses[-1])
    assert bad.meta_loss is not None and math.isnan(float(bad.meta_loss.detach()))
    with pytest.raises(ValueError, match="meta_loss"):
        unroll(_sgd(lr), problem.loss, x0, 0, g0, [None], meta_loss="sum")


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[Unrolled]:
    real = getattr(module, name)
    assert real is unroll  # the module runs the shared loop
    seen: list[Unrolled] = []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(module, name, spy)
    return seen


def test_teacher_meta_training_and_gradient_tuning_both_run_the_shared_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # teacher meta-training: an episode's meta-loss is the mean of the shared loop's window meta-losses
    seen = _spy(monkeypatch, meta_train_mod, "unroll")
    cfg = MetaTrainConfig(
        teacher="rp_small", optimizee="quadratic_cos", episode_length=12, unroll=4, episodes=1
    )
    metrics = MetaTrainer(cfg).train_episode()
    assert len(seen) == 3 and all(len(w.train_losses) == 4 for w in seen)
    windows = [float(w.meta_loss.detach()) for w in seen if w.meta_loss is not None]
    assert metrics["meta_loss"] == pytest.approx(sum(windows) / 3)

    # gradient meta-tuning: each window's recorded val loss is the shared loop's meta-loss
    seen = _spy(monkeypatch, gradient_mod, "run_window")
    _, hist = gradient_mod.meta_tune_gradient(sgd_equation(0.01), P1, unroll=4)
    assert len(seen) == 3
    assert [w["val_loss"] for w in hist["windows"]] == pytest.approx(
        [float(w.meta_loss.detach()) for w in seen]
    )  # type: ignore[arg-type]
    assert hist["train_loss"] == pytest.approx([v for w in seen for v in w.train_losses])
