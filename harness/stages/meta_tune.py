"""The meta_tune stage: fit a symbolic rule's constants to a target optimizee, by gradient or by Optuna.

A pure module (torch, optuna; no Ray, no MLflow). Two methods:

* ``gradient`` (:func:`meta_tune_gradient`): the paper's one-pass meta-fine-tuning. The optimizee is trained
  once with the equation; every ``unroll`` steps the constants take one meta-optimizer (Adam) step on the loss
  of a held-out batch at the parameters reached after the last ``unroll`` steps (truncated BPTT: parameters at
  the window start are detached; the optimizee gradients are inputs, detached, first-order; the updates depend
  differentiably on the constants through :func:`~harness.symbolic.optimizer.functional_step`).
* ``optuna`` (:func:`meta_tune_optuna`): ask/tell over the constants (TPE or CMA-ES), each trial a few short
  training runs with :class:`~harness.symbolic.optimizer.SymbolicOptimizer`; resumable through an Optuna
  storage URL. :func:`optuna_search_space` and :func:`evaluate_constants` serve the same objective to an
  ``OptunaSearch``-over-Ray-Tune driver.

Search spaces: ``log_multipliers`` (default) moves every constant slot ``c -> c * exp(u)``,
``u in [-log(r), log(r)]`` (sign and scale kept; zero constants stay zero), ``constants`` searches the values
themselves in ``[c/r, c*r]`` (log scale for positive, linear for negative, ``[-1, 1]`` for zero). Constants in
one ``provenance["tie_groups"]`` group (eq. 6's gamma) share one search variable.

Optimizee specs are the evaluate stage's dicts: ``{"name", "kwargs", "steps" | "epochs"}``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.registry import OPTIMIZEES
from harness.stages.evaluate import budget_steps, resolve_device
from harness.symbolic.equation import Equation
from harness.symbolic.optimizer import (
    SymbolicOptimizer,
    functional_step,
    init_functional_state,
    load_equation,
)

__all__ = [
    "DIVERGED_PENALTY",
    "build_problem",
    "MetaTuneResult",
    "constant_slots",
    "constants_from_values",
    "evaluate_constants",
    "meta_tune",
    "meta_tune_gradient",
    "meta_tune_optuna",
    "optuna_search_space",
    "run_training",
    "unrolled_meta_loss",
    "write_outputs",
]

#: objective value of a diverged (non-finite) run: large and finite, so samplers rank it last
DIVERGED_PENALTY = 1e9
SPACES = ("log_multipliers", "constants")


# ---------------------------------------------------------------------------------------------------
# problems and plain training
# ---------------------------------------------------------------------------------------------------
def build_problem(optimizee: Mapping[str, Any], seed: int, device: str | torch.device = "cpu") -> Any:
    """The optimizee instance of an optimizee spec (``{"name", "kwargs", ...}``) for ``seed``."""
    dev = resolve_device(device) if isinstance(device, str) else device
    return OPTIMIZEES.get(optimizee["name"])(seed=seed, device=dev, **dict(optimizee.get("kwargs") or {}))


def _budget(problem: Any, optimizee: Mapping[str, Any], steps: int | None) -> int:
    return (
        int(steps)
        if steps is not None
        else budget_steps(problem, optimizee.get("steps"), optimizee.get("epochs"))
    )


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
    n_steps = _budget(problem, optimizee, steps)
    res = train(
        problem,
        lambda params: (SymbolicOptimizer(params, equation, lr=lr), None),
        n_steps,
        final_window=final_window,
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


# ---------------------------------------------------------------------------------------------------
# Optuna
# ---------------------------------------------------------------------------------------------------
def _default_study_name(equation: Equation, optimizee: Mapping[str, Any], key: Mapping[str, Any]) -> str:
    blob = json.dumps({"eq": equation.text, "optimizee": optimizee, **key}, sort_keys=True, default=str)
    return "meta_tune-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def _make_sampler(sampler: str, seed: int, n_trials: int) -> Any:
    import optuna

    if sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=min(10, max(2, n_trials // 3))
        )
    if sampler == "cmaes":
        # no x0: the mean starts at the centre of the space, which is the start point for log multipliers
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {sampler!r}; use tpe, cmaes or random")


def meta_tune_optuna(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    n_trials: int = 20,
    *,
    sampler: str = "tpe",
    storage: str | None = None,
    study_name: str | None = None,
    space: str = "log_multipliers",
    radius: float = 10.0,
    eval_steps: int | None = None,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    lr: float = 1.0,
    device: str | torch.device = "cpu",
) -> tuple[Equation, dict[str, Any]]:
    """Tune the constants by Optuna ask/tell on :func:`evaluate_constants`.

    ``n_trials`` is the study's total of finished trials: with a persistent ``storage`` (e.g.
    ``sqlite:////abs/optuna.db``) and the same ``study_name`` (default: a hash of the equation, optimizee and
    settings) a rerun resumes and only runs the trials still missing; trials an interrupted run left RUNNING are
    marked FAIL (one process owns a study at a time). The first trial of a new study is the equation as given,
    so the result is never worse than the start on the objective.

    Returns:
        ``(tuned equation, summary)``; summary holds ``best_value``, ``start_value``, ``best_params``,
        ``n_trials``, ``n_new_trials``, ``study_name``, ``storage`` and ``trials`` (number, value, params, state).
    """
    import optuna

    eq = load_equation(equation)
    _check_space(space, radius)
    seeds = list(seeds) if seeds is not None else [int(seed)]
    dists = optuna_search_space(eq, space, radius)
    x0 = _start_point(eq, space)
    key = {
        "space": space,
        "radius": radius,
        "eval_steps": eval_steps,
        "seeds": seeds,
        "lr": lr,
        "sampler": sampler,
    }
    name = study_name or _default_study_name(eq, optimizee, key)
    summary: dict[str, Any] = {
        "study_name": name,
        "storage": storage,
        "sampler": sampler,
        "space": space,
        "radius": radius,
        "seeds": seeds,
        "eval_steps": eval_steps,
    }
    if not dists:
        return eq, {**summary, "n_trials": 0, "n_new_trials": 0, "note": "no tunable constants", "trials": []}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=_make_sampler(sampler, seed, n_trials),
    )
    if study.trials:  # resuming: a fresh random stream, so startup samples do not repeat the first run's
        study.sampler = _make_sampler(sampler, seed + len(study.trials), n_trials)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if not study.trials:
        study.enqueue_trial(x0)
    problems = {s: build_problem(optimizee, s, device) for s in seeds}
    new = 0
    while done < n_trials:
        trial = study.ask(dists)
        value = evaluate_constants(
            eq,
            trial.params,
            optimizee,
            space=space,
            radius=radius,
            seeds=seeds,
            eval_steps=eval_steps,
            lr=lr,
            device=device,
            problems=problems,
        )
        study.tell(trial, value)
        done += 1
        new += 1

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial
    start = next(
        (t for t in complete if all(abs(t.params.get(k, math.nan) - v) == 0.0 for k, v in x0.items())), None
    )
    note = {
        "method": "optuna",
        "sampler": sampler,
        "space": space,
        "radius": radius,
        "study_name": name,
        "best_value": best.value,
        "optimizee": dict(optimizee),
        "seeds": seeds,
        "initial_constants": list(eq.constants),
    }
    tuned = _with_constants(eq, constants_from_values(eq, best.params, space, radius), note)
    summary.update(
        {
            "best_value": best.value,
            "best_params": dict(best.params),
            "start_value": None if start is None else start.value,
            "n_trials": len(complete),
            "n_new_trials": new,
            "trials": [
                {"number": t.number, "value": t.value, "params": dict(t.params), "state": t.state.name}
                for t in study.get_trials(deepcopy=False)
            ],
        }
    )
    return tuned, summary


# ---------------------------------------------------------------------------------------------------
# gradient (truncated, online)
# ---------------------------------------------------------------------------------------------------
class _Stream:
    """A batch iterator with one batch of look-ahead (the 'next' held-out batch)."""

    def __init__(self, it: Iterator[Any]) -> None:
        self.it = it
        self.buf: list[Any] = []

    def take(self) -> Any:
        return self.buf.pop(0) if self.buf else next(self.it)

    def peek(self) -> Any:
        if not self.buf:
            self.buf.append(next(self.it))
        return self.buf[0]


def _slot_constants(base: Sequence[float], slots: Sequence[Sequence[int]], u: Tensor) -> list[Tensor]:
    """Per-occurrence constants ``base * exp(u[slot])`` (additive ``u`` for zero bases) as differentiable tensors."""
    out: list[Tensor | None] = [None] * len(base)
    for s, occ in enumerate(slots):
        for i in occ:
            out[i] = base[i] * torch.exp(u[s]) if base[i] != 0.0 else base[i] + u[s]
    return out  # type: ignore[return-value]


def unrolled_meta_loss(
    module: Any,
    problem: Any,
    params: Mapping[str, Tensor],
    state: Mapping[str, Mapping[str, Tensor]],
    batches: Sequence[Any],
    holdout: Any,
    *,
    constants: Sequence[Tensor] | None = None,
    lr: float = 1.0,
    meta_loss: str = "final",
) -> tuple[Tensor, dict[str, Tensor], dict[str, dict[str, Tensor]], list[float]]:
    """Unroll ``len(batches)`` functional steps from ``params`` (detached) and return the meta-loss.

    The meta-loss is the held-out loss at the final parameters (``final``) or its mean over the parameters after
    each step (``mean``); it is differentiable w.r.t. ``constants`` (or the module's constants). Gradients of the
    optimizee loss are computed on detached copies (first-order). Returns ``(meta_loss, params, state,
    train_losses)``; a non-finite training loss stops the unroll early (the meta-loss is then NaN).
    """
    if meta_loss not in ("final", "mean"):
        raise ValueError(f"meta_loss must be 'final' or 'mean', got {meta_loss!r}")
    p = {k: v.detach() for k, v in params.items()}
    st = state
    losses: list[float] = []
    terms: list[Tensor] = []
    for batch in batches:
        with torch.enable_grad():  # optimizee gradients are needed even under no_grad
            leaf = {k: v.detach().requires_grad_(True) for k, v in p.items()}
            loss = problem.loss(leaf, batch)
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                return torch.tensor(math.nan), p, st, losses
            grads = torch.autograd.grad(loss, list(leaf.values()))
        p, st = functional_step(
            module, p, dict(zip(leaf, grads, strict=True)), st, lr=lr, constants=constants
        )
        if meta_loss == "mean":
            terms.append(problem.loss(p, holdout))
    meta = problem.loss(p, holdout) if meta_loss == "final" else torch.stack(terms).mean()
    return meta, p, st, losses


def meta_tune_gradient(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    *,
    steps: int | None = None,
    unroll: int = 10,
    meta_lr: float = 0.05,
    meta_loss: str = "final",
    holdout: str = "next",
    max_multiplier: float = 10.0,
    lr: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Equation, dict[str, Any]]:
    """One-pass meta-fine-tuning by truncated back-propagation through ``unroll``-step windows.

    The optimizee (seed ``seed``) is trained for ``steps`` (default: its spec's budget) with the equation; after
    each window the constants (as log multipliers ``c * exp(u)``, ``|u| <= log(max_multiplier)``; tie groups
    share ``u``) take one Adam step (``meta_lr``) on the meta-loss (:func:`unrolled_meta_loss`). The held-out
    batch is the next training batch, not yet used by the window (``holdout="next"``), or the first test batch
    (``"test"``; leaks test data into tuning, use only when the test set is not the final report).

    Returns:
        ``(tuned equation, history)``; history has per-step ``step``/``train_loss`` and per-window ``windows``
        (``end_step``, ``heldout_loss`` before the meta step, ``constants`` after it), ``diverged_at``. If
        training diverges, the constants in effect before the diverging window are returned.
    """
    if holdout not in ("next", "test"):
        raise ValueError(f"holdout must be 'next' or 'test', got {holdout!r}")
    if int(unroll) < 1 or not max_multiplier > 1.0:
        raise ValueError("unroll must be >= 1 and max_multiplier > 1")
    eq = load_equation(equation)
    torch.manual_seed(seed)
    problem = build_problem(optimizee, seed, device)
    n_steps = _budget(problem, optimizee, steps)
    params = problem.init_params()
    dtype = next(iter(params.values())).dtype
    module_device = next(iter(params.values())).device
    module = eq.compile(dtype=dtype).to(module_device)
    module.requires_grad_(False)
    slots = constant_slots(eq)
    base = [float(c) for c in eq.constants]
    u = torch.zeros(len(slots), dtype=dtype, device=module_device, requires_grad=True)
    meta_opt = torch.optim.Adam([u], lr=meta_lr)
    bound = math.log(max_multiplier)
    state = init_functional_state(eq, params)
    stream = _Stream(problem.batches("train"))
    test_batch = next(iter(problem.batches("test"))) if holdout == "test" else None

    def current() -> list[float]:
        """Per-occurrence constants now, in float64 (``base * exp(u)``, ``base + u`` for zero bases)."""
        vals = list(base)
        for s, occ in enumerate(slots):
            us = float(u[s].detach())
            for i in occ:
                vals[i] = base[i] * math.exp(us) if base[i] != 0.0 else us
        return vals

    hist: dict[str, Any] = {
        "step": [],
        "train_loss": [],
        "windows": [],
        "diverged_at": None,
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": holdout,
        "initial_constants": list(base),
    }
    good = list(base)
    step = 0
    while step < n_steps:
        k = min(int(unroll), n_steps - step)
        batches = [stream.take() for _ in range(k)]
        hold = stream.peek() if holdout == "next" else test_batch
        consts = _slot_constants(base, slots, u) if slots else None
        meta, params, state, losses = unrolled_meta_loss(
            module, problem, params, state, batches, hold, constants=consts, lr=lr, meta_loss=meta_loss
        )
        for i, v in enumerate(losses):
            hist["step"].append(step + i + 1)
            hist["train_loss"].append(v)
        if len(losses) < k or not math.isfinite(losses[-1]):
            hist["diverged_at"] = step + len(losses)
            break
        step += k
        params = {n: v.detach() for n, v in params.items()}
        state = {n: {kk: vv.detach() for kk, vv in s.items()} for n, s in state.items()}
        value = float(meta.detach())
        good = current()
        if slots and math.isfinite(value) and meta.requires_grad:
            meta_opt.zero_grad(set_to_none=True)
            meta.backward()
            if u.grad is not None and bool(torch.isfinite(u.grad).all()):
                meta_opt.step()
                with torch.no_grad():
                    u.clamp_(-bound, bound)
        hist["windows"].append(
            {
                "end_step": step,
                "heldout_loss": value if math.isfinite(value) else None,
                "constants": current(),
            }
        )
    final = good if hist["diverged_at"] is not None else current()
    note = {
        "method": "gradient",
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": holdout,
        "steps": n_steps,
        "optimizee": dict(optimizee),
        "seed": seed,
        "initial_constants": list(base),
    }
    return _with_constants(eq, final, note), hist


# ---------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------
@dataclass
class MetaTuneResult:
    """A tuned equation, how it got there, and held-out metrics before and after tuning.

    ``before``/``after`` are means over ``eval_seeds`` of :func:`run_training` with the initial / tuned constants:
    ``test_loss`` (the held-out loss), ``final_train_loss``, ``test_acc`` (classifiers), ``diverged`` (count).
    ``details`` is the method's own summary (Optuna: best value, trial counts, study name; gradient: empty).
    """

    equation: Equation
    initial_equation: Equation
    method: str
    history: dict[str, Any] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat scalar metrics for trackers: ``heldout_before``/``heldout_after`` (mean test loss),
        ``heldout_improvement`` (before - after), ``train_loss_*``, ``test_acc_*``, ``diverged_*``, and for
        Optuna ``best_value``/``n_trials``."""
        out: dict[str, float] = {}
        names = {
            "test_loss": "heldout",
            "final_train_loss": "train_loss",
            "test_acc": "test_acc",
            "diverged": "diverged",
        }
        for when, vals in (("before", self.before), ("after", self.after)):
            for key, name in names.items():
                if key in vals:
                    out[f"{name}_{when}"] = float(vals[key])
        if "heldout_before" in out and "heldout_after" in out:
            out["heldout_improvement"] = out["heldout_before"] - out["heldout_after"]
        if "kept" in self.details:
            out["kept_tuned"] = float(self.details["kept"] == "tuned")
        for key in ("best_value", "start_value", "n_trials", "n_new_trials"):
            v = self.details.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = float(v)
        return out

    metrics = summary


def _mean_runs(
    equation: Equation,
    optimizee: Mapping[str, Any],
    seeds: Sequence[int],
    steps: int | None,
    device: str | torch.device,
) -> dict[str, float]:
    runs = [run_training(equation, optimizee, s, steps=steps, device=device) for s in seeds]
    out: dict[str, float] = {"diverged": float(sum(bool(r["diverged"]) for r in runs))}
    for key in ("test_loss", "final_train_loss", "test_acc"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def meta_tune(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    method: str = "gradient",
    *,
    seed: int = 0,
    eval_seeds: Sequence[int] | None = None,
    eval_steps: int | None = None,
    device: str = "cpu",
    keep: str = "better",
    **method_kwargs: Any,
) -> MetaTuneResult:
    """Meta-tune ``equation`` on ``optimizee`` with ``method`` (``gradient`` | ``optuna``) and measure it.

    ``method_kwargs`` go to :func:`meta_tune_gradient` or :func:`meta_tune_optuna`. Before/after metrics train
    the optimizee with the initial and the tuned equation on ``eval_seeds`` (default ``[seed]``; give seeds
    the tuning never saw for an honest check) for ``eval_steps`` (default: the spec's budget) and report the
    held-out (test) loss. With ``keep="better"`` (default) the result's equation is the tuned one only when
    it is no worse on those seeds, else the initial one (``details["kept"]`` says which); ``keep="tuned"``
    always returns the tuned equation.
    """
    if keep not in ("better", "tuned"):
        raise ValueError(f"keep must be 'better' or 'tuned', got {keep!r}")
    eq = load_equation(equation)
    dev = resolve_device(device)
    if method == "gradient":
        tuned, history = meta_tune_gradient(eq, optimizee, seed=seed, device=dev, **method_kwargs)
        summary: dict[str, Any] = {}
    elif method == "optuna":
        tuned, summary = meta_tune_optuna(eq, optimizee, seed=seed, device=dev, **method_kwargs)
        history = {"trials": summary.get("trials", [])}
    else:
        raise ValueError(f"unknown meta-tuning method {method!r}; use 'gradient' or 'optuna'")
    seeds = list(eval_seeds) if eval_seeds is not None else [seed]
    before = _mean_runs(eq, optimizee, seeds, eval_steps, dev)
    after = _mean_runs(tuned, optimizee, seeds, eval_steps, dev)
    details = {k: v for k, v in summary.items() if k != "trials"}
    worse = after.get("diverged", 0.0) > before.get("diverged", 0.0) or after.get(
        "test_loss", math.inf
    ) > before.get("test_loss", math.inf)
    if keep == "better" and worse:
        details["kept"] = "initial"
        return MetaTuneResult(eq, eq, method, history, before, after, details)
    details["kept"] = "tuned"
    return MetaTuneResult(tuned, eq, method, history, before, after, details)


def write_outputs(result: MetaTuneResult, outdir: str | Path) -> dict[str, Path]:
    """Write ``equation.json`` (the tuned equation) and ``history.json`` (method, before/after, summary,
    history); returns the paths keyed by file name (the keys name the trial artifacts)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    eq_path = result.equation.save(outdir / "equation.json")
    doc = {
        "method": result.method,
        "equation_before": result.initial_equation.text,
        "equation_after": result.equation.text,
        "before": result.before,
        "after": result.after,
        "summary": result.summary(),
        "details": result.details,
        "history": result.history,
    }
    hist_path = outdir / "history.json"
    hist_path.write_text(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")
    return {"equation.json": eq_path, "history.json": hist_path}


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None."""
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
