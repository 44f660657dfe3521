"""Turn an optimizer config (a plain dict from a suite or search space) into a torch optimizer.

Families (:data:`~harness.training.labels.FAMILIES`): ``sgd`` (lr, momentum, nesterov, weight_decay), ``adam`` (lr, betas, eps,
weight_decay), ``teacher`` (checkpoint: a meta-trained teacher's .pt file) and ``symbolic`` (equation: an
equation JSON file; lr_mult). Every family takes a step-size schedule (:mod:`harness.training.schedules`):
``schedule`` (``constant``, ``cosine``, ``linear``) after ``warmup`` (a fraction of the run), with ``cosine: true``
the grid's shorthand for ``schedule: cosine``; a symbolic rule that carries a schedule
(``provenance["schedule"]``/``["warmup"]``) gets it unless the config names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from harness.features import ADAM_BETAS, ADAM_EPS
from harness.training.labels import FAMILIES
from harness.training.schedules import (
    check_schedule,
    check_warmup,
    equation_schedule,
    equation_warmup,
    lr_scheduler,
)


def build_optimizer(
    spec: dict[str, Any], params: Iterable[torch.nn.Parameter], total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Build the optimizer and its per-step scheduler: cosine with ``cosine: true`` or when a symbolic rule
    carries one (``provenance["schedule"]``/``["warmup"]``, set by meta-tuning and HPO) and the config names none;
    ``schedule``/``warmup`` otherwise (module docstring)."""
    spec = dict(spec)
    family = spec.pop("family", None)
    schedule, warmup = config_schedule(spec)
    named = "schedule" in spec or "warmup" in spec or spec.get("cosine", False)
    for key in ("schedule", "warmup", "cosine"):
        spec.pop(key, None)
    spec.pop("name", None)
    params = list(params)
    if family == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params,
            lr=float(spec.pop("lr")),
            momentum=float(spec.pop("momentum", 0.0)),
            nesterov=bool(spec.pop("nesterov", False)),
            weight_decay=float(spec.pop("weight_decay", 0.0)),
        )
    elif family == "adam":
        betas = spec.pop("betas", ADAM_BETAS)
        opt = torch.optim.Adam(
            params,
            lr=float(spec.pop("lr")),
            betas=(float(betas[0]), float(betas[1])),
            eps=float(spec.pop("eps", ADAM_EPS)),
            weight_decay=float(spec.pop("weight_decay", 0.0)),
            foreach=True,
        )
    elif family == "teacher":
        from teachers.optimizer import TeacherOptimizer

        opt = TeacherOptimizer.from_checkpoint(params, spec.pop("checkpoint"), **_pop_all(spec))
    elif family == "symbolic":
        from harness.symbolic.optim.optimizer import SymbolicOptimizer

        sym = SymbolicOptimizer.from_file(params, spec.pop("equation"), **_pop_all(spec))
        opt = sym
        if not named:  # a rule tuned under a schedule carries it
            prov = sym.equation.provenance
            schedule, warmup = equation_schedule(prov), equation_warmup(prov)
    else:
        raise ValueError(f"unknown optimizer family {family!r}; known families: {', '.join(FAMILIES)}")
    if spec:
        raise ValueError(f"unknown fields for optimizer family {family!r}: {', '.join(sorted(spec))}")
    return opt, lr_scheduler(opt, schedule, total_steps, warmup)


def config_schedule(spec: dict[str, Any]) -> tuple[str, float]:
    """``(schedule, warmup)`` a config names: ``schedule`` (or ``cosine`` when ``cosine: true``, else
    ``constant``) and ``warmup`` (0 by default); ``cosine: true`` beside another schedule is an error."""
    cosine = bool(spec.get("cosine", False))
    schedule = spec.get("schedule")
    if schedule is None:
        schedule = "cosine" if cosine else "constant"
    elif cosine and schedule != "cosine":
        raise ValueError(f"cosine: true contradicts schedule: {schedule}; give one of them")
    return check_schedule(schedule), check_warmup(spec.get("warmup", 0.0))


def _pop_all(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    spec.clear()
    return out
