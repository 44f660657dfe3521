"""Step-size schedules over a run of known length: the ONE definition shared by the baseline grid's
``cosine: true``, baseline configs' ``schedule``/``warmup``, symbolic rules that carry a schedule
(``provenance["schedule"]``, ``provenance["warmup"]``), and meta-tuning, which tunes a rule under the
schedule it is evaluated with.

A schedule multiplies the optimizer's step size by ``lr_factor(schedule, t, T, warmup)`` at the ``t``-th step
(0-based) of a ``T``-step run, as ``torch.optim.lr_scheduler.LambdaLR`` does. With ``W = round(warmup * T)``
warm-up steps the factor first rises linearly, ``(t + 1) / W`` for ``t < W``; then, with ``p = (t - W) / (T - W)``
the progress of the decay, ``constant`` is 1, ``cosine`` is ``0.5 * (1 + cos(pi * p))`` and ``linear`` is
``1 - p`` (both from 1 towards 0 at the last step). Without warm-up, ``cosine`` is the grid's
``0.5 * (1 + cos(pi * t / T))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "FORMULAS",
    "SCHEDULES",
    "check_schedule",
    "check_warmup",
    "describe_schedule",
    "equation_schedule",
    "equation_warmup",
    "lr_factor",
    "lr_scheduler",
    "warmup_steps",
]

SCHEDULES = ("constant", "cosine", "linear")
#: each schedule's factor as printed beside a rule (t: the step, T: the run's steps), without warm-up
FORMULAS = {"constant": "1", "cosine": "0.5*(1+cos(pi*t/T))", "linear": "1-t/T"}
#: the largest warm-up fraction of a run (a run that is all warm-up never decays)
MAX_WARMUP = 0.5


def check_schedule(name: Any) -> str:
    """``name`` if it is a known schedule, else a ValueError that lists them."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    return str(name)


def check_warmup(warmup: Any) -> float:
    """``warmup`` as a float if it is a fraction of the run in ``[0, MAX_WARMUP]``, else a ValueError."""
    try:
        w = float(warmup)
    except (TypeError, ValueError):
        raise ValueError(f"warmup must be a number (a fraction of the run), got {warmup!r}") from None
    if not 0.0 <= w <= MAX_WARMUP:
        raise ValueError(f"warmup is a fraction of the run in [0, {MAX_WARMUP}], got {warmup!r}")
    return w


def warmup_steps(warmup: float, total: int) -> int:
    """The number of warm-up steps of a ``total``-step run (``round(warmup * total)``)."""
    return int(round(check_warmup(warmup) * max(int(total), 1)))


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.0) -> float:
    """The step-size multiplier at 0-based step ``step`` of a ``total``-step run (module docstring)."""
    name = check_schedule(schedule)
    n = max(int(total), 1)
    w = warmup_steps(warmup, n)
    t = int(step)
    if t < w:
        return (t + 1) / w
    if name == "constant":
        return 1.0
    p = min(t - w, n - w) / max(n - w, 1)
    return 0.5 * (1.0 + math.cos(math.pi * p)) if name == "cosine" else 1.0 - p


def lr_scheduler(
    opt: torch.optim.Optimizer, schedule: str, total: int, warmup: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step scheduler applying ``schedule`` (after ``warmup``) over ``total`` steps; None when the
    factor is always 1 (``constant`` without warm-up)."""
    if check_schedule(schedule) == "constant" and warmup_steps(warmup, total) == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, total, warmup))


def equation_schedule(provenance: Mapping[str, Any]) -> str:
    """The schedule a symbolic rule carries (``provenance["schedule"]``; ``constant`` when it has none)."""
    return check_schedule(provenance.get("schedule", "constant"))


def equation_warmup(provenance: Mapping[str, Any]) -> float:
    """The warm-up fraction a symbolic rule carries (``provenance["warmup"]``; 0 when it has none)."""
    return check_warmup(provenance.get("warmup", 0.0))


def describe_schedule(schedule: str, warmup: float = 0.0) -> str:
    """The schedule as printed beside a rule or a config, e.g. ``cosine 0.5*(1+cos(pi*t/T))`` or
    ``linear warm-up over 5% of the run, then cosine ...``; empty for ``constant`` without warm-up."""
    name = check_schedule(schedule)
    w = check_warmup(warmup)
    decay = "" if name == "constant" else f"{name} {FORMULAS[name]}"
    if w == 0:
        return decay
    rest = f", then {decay} over the rest" if decay else ", then constant"
    return f"linear warm-up over {100 * w:g}% of the run{rest}"
