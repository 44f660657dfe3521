"""Optimizee instances and their training budgets, one definition shared by every stage that trains.

An optimizee spec is :class:`harness.config.suite.OptimizeeSpec` or its dict (``{"name", "kwargs", "steps" |
"epochs"}``); the budget is its ``steps``, else ``epochs`` times the problem's steps per epoch, else the
problem's ``default_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel

from harness.registry import OPTIMIZEES

OptimizeeLike = Mapping[str, Any] | BaseModel


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_dict(optimizee: OptimizeeLike) -> Mapping[str, Any]:
    return optimizee.model_dump() if isinstance(optimizee, BaseModel) else optimizee


def build_problem(optimizee: OptimizeeLike, seed: int, device: str | torch.device = "cpu") -> Any:
    """The optimizee instance of ``optimizee`` for ``seed`` on ``device``."""
    spec = _as_dict(optimizee)
    kwargs = dict(spec.get("kwargs") or {})
    OPTIMIZEES.check_kwargs(
        spec["name"], kwargs, f"optimizee {spec['name']!r}"
    )  # sizes bounded before building
    return OPTIMIZEES.get(spec["name"])(seed=seed, device=resolve_device(device), **kwargs)


def budget_steps(problem: Any, steps: int | None, epochs: float | None) -> int:
    """Training steps from a steps or epochs budget (default: the problem's ``default_steps``).

    One run has one horizon: a list (an evaluate stage's several horizons, planned as separate trials)
    is refused here."""
    for unit, value in (("steps", steps), ("epochs", epochs)):
        if isinstance(value, list | tuple):
            raise ValueError(f"one training run has one horizon; got {unit}: {list(value)[:8]}")
    if steps is not None:
        return int(steps)
    if epochs is not None:
        return max(1, int(math.ceil(epochs * problem.steps_per_epoch)))
    return int(problem.default_steps)


def spec_budget(problem: Any, optimizee: OptimizeeLike, steps: int | None = None) -> int:
    """``steps`` when given, else the budget the optimizee spec sets (see :func:`budget_steps`)."""
    if steps is not None:
        return int(steps)
    spec = _as_dict(optimizee)
    return budget_steps(problem, spec.get("steps"), spec.get("epochs"))
