"""Shared parts of meta-tuning: plain training with an equation, constant slots and search spaces.

Optimizee specs are the evaluate stage's dicts: ``{"name", "kwargs", "steps" | "epochs"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.stages.problems import build_problem, spec_budget
from harness.symbolic.equation import Equation
from harness.symbolic.optimizer import SymbolicOptimizer, load_equation

#: objective value of a diverged (non-finite) run: large and finite, so samplers rank it last
DIVERGED_PENALTY = 1e9
SPACES = ("log_multipliers", "constants")


# ---------------------------------------------------------------------------------------------------
# problems and plain training
# ---------------------------------------------------------------------------------------------------
def run_training(
    equation: Equation,
    optimizee: Mapping[str, Any],
    seed: int,
    *,
    steps: int | None = None,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
    problem: Any = None,
    final_window: int = 10,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train the optimizee with ``SymbolicOptimizer(equation, lr)`` through the evaluate stage's loop.

    Returns ``final_train_loss`` (see :func:`harness.stages.evaluate.train`), ``test_loss`` /
    ``test_acc`` (held-out metrics, when ``evaluate_test``), ``diverged`` and ``steps``. A non-finite loss or
    parameter ends the run as diverged with infinite losses.
    """
    from harness.stages.evaluate import train

    torch.manual_seed(seed)
    problem = problem if problem is not None else build_problem(optimizee, seed, device)
    n_steps = spec_budget(problem, optimizee, steps)
    res = train(
        problem,
        lambda params: (SymbolicOptimizer(params, equation, lr=lr), None),
        n_steps,
        final_window=final_window,
        measure_cost=False,
        evaluate_test=evaluate_test,
    )
    out: dict[str, Any] = {
        "steps": res.steps,
        "diverged": res.status == "diverged",
        "final_train_loss": res.final_train_loss,
    }
    if evaluate_test or res.status == "diverged":
        out["test_loss"] = res.test_loss
    if evaluate_test and res.status == "ok" and res.test_acc is not None:
        out["test_acc"] = float(res.test_acc)
    return out


# ---------------------------------------------------------------------------------------------------
# constants, slots and search spaces
# ---------------------------------------------------------------------------------------------------
def constant_slots(equation: Equation) -> list[list[int]]:
    """Groups of constant occurrences tuned together: ``provenance["tie_groups"]`` (e.g. eq. 6's gamma) first,
    then every other occurrence on its own, in index order."""
    n = equation.n_constants
    seen: set[int] = set()
    slots: list[list[int]] = []
    for group in equation.provenance.get("tie_groups") or []:
        idx = sorted(int(i) for i in group)
        if not idx or any(not 0 <= i < n or i in seen for i in idx) or len(set(idx)) != len(idx):
            raise ValueError(f"bad tie group {group!r} for an equation with {n} constants")
        seen.update(idx)
        slots.append(idx)
    slots.extend([i] for i in range(n) if i not in seen)
    return slots


def _check_space(space: str, radius: float) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown search space {space!r}; use one of {', '.join(SPACES)}")
    if not radius > 1.0:
        raise ValueError(f"radius must be > 1, got {radius}")


def optuna_search_space(
    equation: Equation, space: str = "log_multipliers", radius: float = 10.0
) -> dict[str, Any]:
    """Optuna distributions over the equation's constant slots (see the module docstring).

    Names: ``u{slot}`` (log multipliers; zero constants are left out) or ``c{slot}`` (constants).
    """
    import optuna

    _check_space(space, radius)
    lr_ = math.log(radius)
    dists: dict[str, Any] = {}
    for s, occ in enumerate(constant_slots(equation)):
        c = equation.constants[occ[0]]
        if space == "log_multipliers":
            if any(equation.constants[i] != 0.0 for i in occ):
                dists[f"u{s}"] = optuna.distributions.FloatDistribution(-lr_, lr_)
        elif c > 0:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(c / radius, c * radius, log=True)
        elif c < 0:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(c * radius, c / radius)
        else:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(-1.0, 1.0)
    return dists


def _start_point(equation: Equation, space: str) -> dict[str, float]:
    """The trial parameters that reproduce the equation's current constants."""
    slots = constant_slots(equation)
    if space == "log_multipliers":
        return {f"u{s}": 0.0 for s, occ in enumerate(slots) if any(equation.constants[i] != 0.0 for i in occ)}
    return {f"c{s}": float(equation.constants[occ[0]]) for s, occ in enumerate(slots)}


def constants_from_values(
    equation: Equation, values: Mapping[str, float], space: str = "log_multipliers", radius: float = 10.0
) -> list[float]:
    """Per-occurrence constants for trial parameters ``values`` of :func:`optuna_search_space` (missing names
    keep the current value)."""
    _check_space(space, radius)
    out = list(equation.constants)
    for s, occ in enumerate(constant_slots(equation)):
        if space == "log_multipliers":
            u = float(values.get(f"u{s}", 0.0))
            for i in occ:
                out[i] = equation.constants[i] * math.exp(u)
        elif f"c{s}" in values:
            for i in occ:
                out[i] = float(values[f"c{s}"])
    return out


def _with_constants(
    equation: Equation, values: Sequence[float], note: Mapping[str, Any] | None = None
) -> Equation:
    """``equation.with_constants`` that keeps provenance (feature spec, tie groups) and checks the constant order
    survived re-canonicalisation (tie-group indices refer to it)."""
    eq = equation.with_constants(values)
    if [float(v) for v in eq.constants] != [float(v) for v in values]:
        raise RuntimeError(
            "re-canonicalising the tuned equation reordered its constants; tie groups would break"
        )
    eq.provenance = dict(equation.provenance)
    if note:
        eq.provenance["meta_tune"] = dict(note)
    return eq


def evaluate_constants(
    equation: Equation | str | Path,
    values: Mapping[str, float] | Sequence[float],
    optimizee: Mapping[str, Any],
    *,
    space: str = "log_multipliers",
    radius: float = 10.0,
    seeds: Sequence[int] = (0,),
    eval_steps: int | None = None,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
    problems: Mapping[int, Any] | None = None,
) -> float:
    """The Optuna objective: mean final training loss over ``seeds`` of an ``eval_steps``-step run.

    Args:
        values: trial parameters of :func:`optuna_search_space` (a mapping), or per-occurrence constants.
        problems: prebuilt optimizee instances by seed (saves rebuilding them every trial).
    Returns:
        The mean, or :data:`DIVERGED_PENALTY` when any run diverges (always finite).
    """
    eq = load_equation(equation)
    consts = constants_from_values(eq, values, space, radius) if isinstance(values, Mapping) else list(values)
    if not all(math.isfinite(c) for c in consts):
        return DIVERGED_PENALTY
    tuned = eq.with_constants(consts)
    tuned.provenance = dict(eq.provenance)
    total = 0.0
    for s in seeds:
        res = run_training(
            tuned,
            optimizee,
            s,
            steps=eval_steps,
            lr=lr,
            device=device,
            problem=(problems or {}).get(s),
            evaluate_test=False,
        )
        v = res["final_train_loss"]
        if res["diverged"] or not math.isfinite(v):
            return DIVERGED_PENALTY
        total += v
    return min(total / max(len(seeds), 1), DIVERGED_PENALTY)
