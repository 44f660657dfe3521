"""Train one optimizee with one optimizer for one seed: the loss curve, final metrics and wall time.

A non-finite loss ends the run early as ``diverged``, a result and never an exception.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.stages.cost import state_bytes_per_param, step_seconds_vs_adam
from harness.stages.problems import budget_steps, build_problem
from harness.training.optimizers import build_optimizer

#: how many of the last minibatch losses ``final_train_loss`` averages (capped by steps per epoch)
FINAL_WINDOW = 20


@dataclass
class EvalResult:
    """What one training run produced; ``status`` is ``ok`` or ``diverged``."""

    status: str
    steps: int
    budget_steps: int
    final_train_loss: float
    test_loss: float
    test_acc: float | None
    wall_time_s: float
    curve_steps: list[int] = field(default_factory=list)
    curve_loss: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    #: median seconds of one optimizer step, and of an Adam(foreach) step on the same parameters
    step_s: float = math.nan
    adam_step_s: float = math.nan
    state_bytes_per_param: float = math.nan

    def metrics(self) -> dict[str, float]:
        """Scalar metrics for trackers (diverged runs report inf losses and 0 accuracy); the names are
        :data:`METRIC_MODES`' (``test_acc`` only where the optimizee has a test accuracy)."""
        out = {
            "final_train_loss": self.final_train_loss,
            "test_loss": self.test_loss,
            "wall_time_s": self.wall_time_s,
            "steps": float(self.steps),
            "diverged": float(self.status == "diverged"),
        }
        if self.test_acc is not None:
            out["test_acc"] = self.test_acc
        if math.isfinite(self.step_s) and math.isfinite(self.adam_step_s) and self.adam_step_s > 0:
            out["step_ms"] = 1e3 * self.step_s
            out["step_ratio_vs_adam"] = self.step_s / self.adam_step_s
        if math.isfinite(self.state_bytes_per_param):
            out["state_bytes_per_param"] = self.state_bytes_per_param
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    optimizee: dict[str, Any],
    optimizer: dict[str, Any],
    seed: int,
    *,
    device: str = "cpu",
    log_every: int = 10,
    on_log: Callable[[int, float, float], None] | None = None,
) -> EvalResult:
    """Train ``optimizee`` (an OptimizeeSpec dict) with ``optimizer`` (a family config) from ``seed``.

    Args:
        optimizee: ``{"name", "kwargs", "steps" | "epochs"}``.
        optimizer: an optimizer config accepted by ``harness.training.optimizers.build_optimizer``.
        seed: seeds the problem instance, its initialisation and batch order.
        device: ``cpu``, ``cuda``, or ``auto``.
        log_every: record the minibatch loss every this many steps.
        on_log: called with ``(step, loss, window_mean)`` at each recorded point (progress, streaming to
            trackers, early stopping): the minibatch loss, and the mean of the last window of minibatch
            losses (the window ``final_train_loss`` averages at the end).

    Returns:
        An ``EvalResult``; a NaN/inf loss yields ``status="diverged"`` with infinite losses.
    """
    torch.manual_seed(seed)
    problem = build_problem(optimizee, seed, device)
    n_steps = budget_steps(problem, optimizee.get("steps"), optimizee.get("epochs"))
    return train(
        problem,
        lambda params: build_optimizer(optimizer, params, n_steps),
        n_steps,
        log_every=log_every,
        on_log=on_log,
    )


def train(
    problem: Any,
    make_optimizer: Callable[[Any], tuple[torch.optim.Optimizer, Any]],
    n_steps: int,
    *,
    log_every: int = 10,
    on_log: Callable[[int, float, float], None] | None = None,
    final_window: int = FINAL_WINDOW,
    evaluate_test: bool = True,
    measure_cost: bool = True,
) -> EvalResult:
    """The one training loop: ``problem.module()`` trained ``n_steps`` steps by ``make_optimizer(params)``
    (which returns the optimizer and an optional per-step scheduler); every training run of the harness
    (evaluate trials, meta-tuning objectives) goes through here so they measure the same thing.

    ``final_train_loss`` is the mean of the last ``min(final_window, steps_per_epoch, n_steps)`` minibatch
    losses (``on_log`` gets the same window's mean at each log point, so the last equals it); a NaN/inf loss or parameter ends the run as ``diverged``. ``evaluate_test=False`` skips the
    held-out evaluation (``test_loss`` is then NaN). The optimizer's cost is measured on the way
    (:mod:`harness.stages.cost`): state bytes per parameter, and (unless ``measure_cost=False``; after
    the run, so nothing reported changes) the median step time against Adam's on the same parameters.
    """
    model = problem.module()
    model.train()
    opt, sched = make_optimizer(model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    window = max(1, min(final_window, problem.steps_per_epoch, n_steps))
    recent: list[float] = []
    curve_steps: list[int] = []
    curve_loss: list[float] = []
    status, diverged_at, step = "ok", None, 0
    start = time.perf_counter()
    batches = problem.batches("train")
    for step in range(1, n_steps + 1):
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = problem.module_loss(model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            status, diverged_at = "diverged", step
            break
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        recent.append(value)
        if len(recent) > window:
            recent.pop(0)
        if step == 1 or step % log_every == 0 or step == n_steps:
            curve_steps.append(step)
            curve_loss.append(value)
            if on_log is not None:
                on_log(step, value, sum(recent) / len(recent))
    if status == "ok" and not all(math.isfinite(float(p.detach().abs().max())) for p in model.parameters()):
        status, diverged_at = "diverged", step
    result = EvalResult(
        status=status,
        steps=step,
        budget_steps=n_steps,
        final_train_loss=math.inf,
        test_loss=math.inf,
        test_acc=0.0 if problem.is_classification else None,
        wall_time_s=0.0,
        curve_steps=curve_steps,
        curve_loss=curve_loss,
        diverged_at=diverged_at,
    )
    if status == "ok":
        result.state_bytes_per_param = state_bytes_per_param(opt, trainable)
    if status == "ok":
        result.final_train_loss = sum(recent) / len(recent)
        result.test_loss, result.test_acc = math.nan, None
        if evaluate_test:
            model.eval()
            test = problem.evaluate({k: v.detach() for k, v in model.named_parameters()})
            result.test_loss = float(test["test_loss"])
            result.test_acc = test.get("test_acc")
            if not math.isfinite(result.test_loss):
                result.status, result.diverged_at = "diverged", step
                result.test_loss = math.inf
    result.wall_time_s = time.perf_counter() - start
    if result.status == "ok" and measure_cost:
        # after the run and its evaluation: extra steps cannot change any reported number but the cost
        result.step_s, result.adam_step_s = step_seconds_vs_adam(opt, trainable)
    return result
