"""Step-size schedules over a run of known length: the ONE definition shared by the baseline grid's
``cosine: true``, symbolic rules that carry a schedule (``provenance["schedule"]``), and meta-tuning, which
tunes a rule under the schedule it is evaluated with.

A schedule multiplies the optimizer's step size by ``lr_factor(schedule, t, T)`` at the ``t``-th step
(0-based) of a ``T``-step run, as ``torch.optim.lr_scheduler.LambdaLR`` does: ``constant`` is 1, ``cosine``
is ``0.5 * (1 + cos(pi * min(t, T) / T))`` (from 1 at the first step towards 0 at the last).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["FORMULAS", "SCHEDULES", "check_schedule", "equation_schedule", "lr_factor", "lr_scheduler"]

SCHEDULES = ("constant", "cosine")
#: each schedule's factor as printed beside a rule (t: the step, T: the run's steps)
FORMULAS = {"constant": "1", "cosine": "0.5*(1+cos(pi*t/T))"}


def check_schedule(name: Any) -> str:
    """``name`` if it is a known schedule, else a ValueError that lists them."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    return str(name)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The step-size multiplier at 0-based step ``step`` of a ``total``-step run."""
    if check_schedule(schedule) == "constant":
        return 1.0
    n = max(int(total), 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(int(step), n) / n))


def lr_scheduler(
    opt: torch.optim.Optimizer, schedule: str, total: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step scheduler applying ``schedule`` over ``total`` steps (None for ``constant``)."""
    if check_schedule(schedule) == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, total))


def equation_schedule(provenance: Mapping[str, Any]) -> str:
    """The schedule a symbolic rule carries (``provenance["schedule"]``; ``constant`` when it has none)."""
    return check_schedule(provenance.get("schedule", "constant"))
