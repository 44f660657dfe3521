"""Shared parts of meta-tuning: plain training with an equation, the validation split, constant slots and
Optuna search spaces.

Optimizee specs are the evaluate stage's dicts: ``{"name", "kwargs", "steps" | "epochs"}``. Tuning and the
tuned-versus-initial choice only ever read the training data: held-out losses come from the ``val`` split
(``val_fraction`` of the training examples, held out of training; :func:`with_val_split`); the ``test``
split is left to the evaluate stage's report. Search spaces: :data:`SPACES` (:func:`optuna_search_space`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.registry import OPTIMIZEES
from harness.stages.problems import build_problem, spec_budget
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import SymbolicOptimizer, load_equation
from harness.training.schedules import check_schedule, equation_schedule, equation_warmup, lr_scheduler

#: objective value of a diverged (non-finite) run: large and finite, so samplers rank it last
DIVERGED_PENALTY = 1e9
SPACES = ("signed", "log_multipliers", "constants")
#: the free multiplier is ``sinh(ASINH1 + v)``: 1 at ``v = 0`` (gradient tuning and the ``signed`` space)
ASINH1 = math.asinh(1.0)


def signed_multiplier(v: float) -> float:
    """``sinh(asinh(1) + v)``: the free (sign-changing) multiplier of a constant, 1 at ``v = 0``."""
    return math.sinh(ASINH1 + v)


# ---------------------------------------------------------------------------------------------------
# problems, the validation split and plain training
# ---------------------------------------------------------------------------------------------------
def with_val_split(optimizee: Mapping[str, Any], val_fraction: float | None) -> dict[str, Any]:
    """The optimizee spec meta-tuning trains and selects on: ``val_fraction`` added to its kwargs when the
    optimizee's constructor takes one and the spec does not set it already (None: the spec as given).

    Data-free problems (P1) take none: their ``val`` split is the objective itself.
    """
    spec = dict(optimizee)
    kwargs = dict(spec.get("kwargs") or {})
    if val_fraction is None or "val_fraction" in kwargs:
        return spec
    try:
        takes = "val_fraction" in inspect.signature(OPTIMIZEES.get(spec["name"])).parameters
    except (TypeError, ValueError):  # no introspectable signature: leave the spec alone
        takes = False
    if takes:
        spec["kwargs"] = {**kwargs, "val_fraction": float(val_fraction)}
    return spec


def run_training(
    equation: Equation | Mapping[str, Any],
    optimizee: Mapping[str, Any],
    seed: int,
    *,
    steps: int | None = None,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
    problem: Any = None,
    final_window: int = 10,
    splits: Sequence[str] = ("val",),
    on_log: Callable[[int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Train the optimizee with ``SymbolicOptimizer(equation, lr)`` (or, when ``equation`` is an optimizer
    config, the optimizer :func:`~harness.training.optimizers.build_optimizer` makes of it; ``lr`` unused)
    through the evaluate stage's loop.

    Returns ``final_train_loss`` (see :func:`harness.stages.evaluate.train`), ``diverged``, ``steps`` and, for
    every split in ``splits`` (``val``: tuning and selection; ``test`` only ever for information),
    ``<split>_loss`` / ``<split>_acc`` of the trained parameters (``problem.evaluate(params, split)``). A
    non-finite loss or parameter ends the run as diverged with infinite losses. ``on_log`` is the training
    loop's (step, minibatch loss, window mean).
    """
    from harness.stages.evaluate import train

    torch.manual_seed(seed)
    problem = problem if problem is not None else build_problem(optimizee, seed, device)
    n_steps = spec_budget(problem, optimizee, steps)
    trained: list[torch.nn.Parameter] = []

    def make(params: Any) -> tuple[torch.optim.Optimizer, Any]:
        trained.extend(params)  # the model's parameters, in named_parameters order
        if not isinstance(equation, Equation):
            from harness.training.optimizers import build_optimizer

            return build_optimizer(dict(equation), trained, n_steps)
        opt = SymbolicOptimizer(trained, equation, lr=lr)
        prov = equation.provenance
        return opt, lr_scheduler(opt, equation_schedule(prov), n_steps, equation_warmup(prov))

    res = train(
        problem, make, n_steps, final_window=final_window, measure_cost=False, evaluate_test=False, on_log=on_log
    )
    out: dict[str, Any] = {
        "steps": res.steps,
        "diverged": res.status == "diverged",
        "final_train_loss": res.final_train_loss,
    }
    if not out["diverged"] and splits:
        names = [n for n, _ in problem.template.named_parameters()]
        params = {n: p.detach() for n, p in zip(names, trained, strict=True)}
        for split in splits:
            m = problem.evaluate(params) if split == "test" else problem.evaluate(params, split=split)
            out[f"{split}_loss"] = float(m[f"{split}_loss"])
            if f"{split}_acc" in m:
                out[f"{split}_acc"] = float(m[f"{split}_acc"])
            out["diverged"] = out["diverged"] or not math.isfinite(out[f"{split}_loss"])
    if out["diverged"]:
        out["final_train_loss"] = math.inf
        out.update({f"{split}_loss": math.inf for split in splits})
        out = {k: v for k, v in out.items() if not k.endswith("_acc")}
    return out


def validation_run(
    equation_file: str, optimizee: Mapping[str, Any], seed: int, steps: int
) -> dict[str, float]:
    """``{"train_loss", "val_acc", "val_loss"}`` of the equation in ``equation_file`` training ``optimizee``
    (give it a validation split: :func:`with_val_split`) from ``seed`` for ``steps`` steps; for choosing
    among rules without the test split. A module-level function of plain arguments, so a process pool can
    run it."""
    out = run_training(Equation.load(equation_file), optimizee, seed, steps=steps, splits=("val",))
    return {
        "train_loss": float(out["final_train_loss"]),
        "val_acc": float(out.get("val_acc", math.nan)),
        "val_loss": float(out.get("val_loss", math.inf)),
    }


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


def _multiplier_name(space: str) -> str | None:
    """The trial parameter's prefix of a multiplier space (``v``/``u``), None for ``constants``."""
    return {"signed": "v", "log_multipliers": "u"}.get(space)


def optuna_search_space(equation: Equation, space: str = "signed", radius: float = 10.0) -> dict[str, Any]:
    """Optuna distributions over the equation's constant slots, ``r = radius``:

    * ``signed``: ``v{slot}``, the free multiplier ``c = c0 * sinh(asinh(1) + v)`` (gradient tuning's) in
      ``|v| <= asinh(r) - asinh(1)``: from ``sinh(2*asinh(1) - asinh(r))`` (-1.57 for r = 10) to ``r``, so a
      constant may change sign; ``v = 0`` is the equation as given (where CMA-ES starts);
    * ``log_multipliers``: ``u{slot}``, ``c = c0 * exp(u)`` with ``|u| <= log(r)`` (sign kept);
    * ``constants``: ``c{slot}``, the values in ``[c/r, c*r]`` (log scale for positive, linear for negative,
      ``[-1, 1]`` for zero). The multiplier spaces leave zero constants out (they stay zero).
    """
    import optuna

    _check_space(space, radius)
    prefix = _multiplier_name(space)
    half = math.asinh(radius) - ASINH1 if space == "signed" else math.log(radius)
    dists: dict[str, Any] = {}
    for s, occ in enumerate(constant_slots(equation)):
        c = equation.constants[occ[0]]
        if prefix is not None:
            if any(equation.constants[i] != 0.0 for i in occ):
                dists[f"{prefix}{s}"] = optuna.distributions.FloatDistribution(-half, half)
        elif c > 0:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(c / radius, c * radius, log=True)
        elif c < 0:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(c * radius, c / radius)
        else:
            dists[f"c{s}"] = optuna.distributions.FloatDistribution(-1.0, 1.0)
    return dists


def _start_point(equation: Equation, space: str) -> dict[str, float]:
    """The trial parameters that reproduce the equation's current constants (the multiplier spaces' centre)."""
    slots = constant_slots(equation)
    prefix = _multiplier_name(space)
    if prefix is not None:
        return {
            f"{prefix}{s}": 0.0
            for s, occ in enumerate(slots)
            if any(equation.constants[i] != 0.0 for i in occ)
        }
    return {f"c{s}": float(equation.constants[occ[0]]) for s, occ in enumerate(slots)}


def constants_from_values(
    equation: Equation, values: Mapping[str, float], space: str = "signed", radius: float = 10.0
) -> list[float]:
    """Per-occurrence constants for trial parameters ``values`` of :func:`optuna_search_space` (missing names
    keep the current value)."""
    _check_space(space, radius)
    out = list(equation.constants)
    prefix = _multiplier_name(space)
    for s, occ in enumerate(constant_slots(equation)):
        if prefix is not None and f"{prefix}{s}" in values:
            x = float(values[f"{prefix}{s}"])
            mult = signed_multiplier(x) if space == "signed" else math.exp(x)
            for i in occ:
                out[i] = equation.constants[i] * mult
        elif prefix is None and f"c{s}" in values:
            for i in occ:
                out[i] = float(values[f"c{s}"])
    return out


def with_schedule(equation: Equation, schedule: str | None) -> Equation:
    """``equation`` carrying step-size ``schedule`` (``provenance["schedule"]``, :mod:`harness.training.schedules`):
    every run that tunes, selects or evaluates it then scales its update by the schedule over the run's
    length, as the grid's ``cosine: true`` does. None keeps what the equation carries."""
    if schedule is None:
        return equation
    out = equation.copy()
    out.provenance["schedule"] = check_schedule(schedule)
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


def _seed_progress(
    on_progress: Callable[[int, float], None], index: int, ran: int, done: float
) -> Callable[[int, float, float], None]:
    """The training loop's ``on_log`` for seed number ``index`` of :func:`evaluate_constants`, after ``ran``
    steps of earlier seeds whose final losses sum to ``done``."""

    def log(step: int, _loss: float, mean: float) -> None:
        on_progress(ran + step, (done + mean) / (index + 1))

    return log


def evaluate_constants(
    equation: Equation | str | Path,
    values: Mapping[str, float] | Sequence[float],
    optimizee: Mapping[str, Any],
    *,
    space: str = "signed",
    radius: float = 10.0,
    seeds: Sequence[int] = (0,),
    eval_steps: int | None = None,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
    problems: Mapping[int, Any] | None = None,
    on_progress: Callable[[int, float], None] | None = None,
) -> float:
    """The Optuna objective: mean final training loss over ``seeds`` of an ``eval_steps``-step run.

    Args:
        values: trial parameters of :func:`optuna_search_space` (a mapping), or per-occurrence constants.
        problems: prebuilt optimizee instances by seed (saves rebuilding them every trial).
        on_progress: called at each log point with ``(step, interim objective)``: the step counts on over the
            seeds (run one after another), and the interim objective is the mean over the seeds so far of
            their window-mean training loss (the current seed's at this step), so it ends as the objective.
    Returns:
        The mean, or :data:`DIVERGED_PENALTY` when any run diverges (always finite).
    """
    eq = load_equation(equation)
    consts = constants_from_values(eq, values, space, radius) if isinstance(values, Mapping) else list(values)
    if not all(math.isfinite(c) for c in consts):
        return DIVERGED_PENALTY
    tuned = eq.with_constants(consts)
    tuned.provenance = dict(eq.provenance)
    total, ran = 0.0, 0
    for i, s in enumerate(seeds):
        log = _seed_progress(on_progress, i, ran, total) if on_progress is not None else None
        res = run_training(
            tuned,
            optimizee,
            s,
            steps=eval_steps,
            lr=lr,
            device=device,
            problem=(problems or {}).get(s),
            splits=(),
            on_log=log,
        )
        v = res["final_train_loss"]
        if res["diverged"] or not math.isfinite(v):
            return DIVERGED_PENALTY
        total += v
        ran += int(res["steps"])
    return min(total / max(len(seeds), 1), DIVERGED_PENALTY)
