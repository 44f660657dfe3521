"""Turn an optimizer config (a plain dict from a suite or search space) into a torch optimizer.

Families (:data:`~harness.training.labels.FAMILIES`): ``sgd`` (lr, momentum, nesterov, weight_decay), ``adam`` (lr, betas, eps,
weight_decay), ``teacher`` (checkpoint: a meta-trained teacher's .pt file) and ``symbolic`` (equation: an
equation JSON file; lr_mult). Every family takes ``cosine: bool`` (cosine decay of the step size to 0,
:mod:`harness.training.schedules`); a symbolic rule with ``provenance["schedule"] = "cosine"`` gets it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from harness.features import ADAM_BETAS, ADAM_EPS
from harness.training.labels import FAMILIES
from harness.training.schedules import equation_schedule, lr_scheduler


def build_optimizer(
    spec: dict[str, Any], params: Iterable[torch.nn.Parameter], total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Build the optimizer and its per-step scheduler: cosine with ``cosine: true`` or when a symbolic rule
    carries that schedule (``provenance["schedule"]``, set by meta-tuning with ``schedule: cosine``)."""
    spec = dict(spec)
    family = spec.pop("family", None)
    schedule = "cosine" if spec.pop("cosine", False) else "constant"
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
        carried = equation_schedule(sym.equation.provenance)  # a rule tuned under a schedule carries it
        opt, schedule = sym, (carried if carried != "constant" else schedule)
    else:
        raise ValueError(f"unknown optimizer family {family!r}; known families: {', '.join(FAMILIES)}")
    if spec:
        raise ValueError(f"unknown fields for optimizer family {family!r}: {', '.join(sorted(spec))}")
    return opt, lr_scheduler(opt, schedule, total_steps)


def _pop_all(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    spec.clear()
    return out
