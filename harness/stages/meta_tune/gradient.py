"""Meta-tuning by gradient: the paper's one-pass meta-fine-tuning (Sec. 4.3) through truncated unrolls.

The target is trained ONCE with the equation, for its whole budget; every ``unroll`` steps the tunables take
one Adam step on the window's meta-loss, read on the next batch of the ``val`` split at the window's last
iterate (``meta_loss="final"``) or over all its iterates (``"mean"``). The window is
:func:`harness.training.unroll.unroll`, the loop teacher meta-training runs. The tunables (:func:`tunables`)
are the constant slots (:class:`ConstantSlots`) and, for an equation reading ``eta``, :class:`EtaParams`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from harness.features import ETA, ETA_A_MAX, FeatureSpec
from harness.stages.meta_tune.common import ASINH1, _with_constants, constant_slots
from harness.stages.problems import build_problem, spec_budget
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import (
    feature_spec_for,
    functional_step,
    init_functional_state,
    load_equation,
)
from harness.training.schedules import equation_schedule, equation_warmup, lr_factor
from harness.training.unroll import META_LOSSES, loss_and_grads
from harness.training.unroll import unroll as run_window


# ---------------------------------------------------------------------------------------------------
# what is tuned
# ---------------------------------------------------------------------------------------------------
class Tunable(Protocol):
    """One group of tuned tensors: ``raw`` is the leaf Adam steps; the rest maps it to the update rule."""

    name: str
    raw: Tensor

    def step_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`functional_step`, differentiable w.r.t. ``raw``."""
        ...

    def project(self) -> None:
        """Bring ``raw`` back into its feasible set after a meta step (in place, no grad)."""
        ...

    def values(self) -> list[float]:
        """The current tuned values (plain floats: history and the result)."""
        ...

    def apply(self, equation: Equation, values: Sequence[float]) -> Equation:
        """``equation`` with ``values`` (from :meth:`values`) written in."""
        ...


class ConstantSlots:
    """The equation's constants: one variable ``u`` per :func:`constant slot <constant_slots>`, starting at 0.

    Per occurrence ``c0``: free (``max_multiplier=None``) ``c = c0 * sinh(asinh(1) + u)``, zero constants
    ``c = z * sinh(u)`` with ``z`` the smallest nonzero ``|c0|`` (1 if none): log-like for large multipliers
    (Adam's step of ``meta_lr`` moves a 1e-4 weight and a gamma of 1 alike), linear through zero, so a
    constant can change sign; bounded (``max_multiplier=r``) ``c = c0 * exp(u)``, ``|u| <= log(r)``: sign
    kept, zero constants stay 0. Ratios inside a tie group are kept.
    """

    name = "constants"

    def __init__(
        self,
        equation: Equation,
        max_multiplier: float | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        if max_multiplier is not None and not max_multiplier > 1.0:
            raise ValueError(f"max_multiplier must be > 1 (or None: free), got {max_multiplier}")
        self.slots = constant_slots(equation)
        self.base = [float(c) for c in equation.constants]
        self.bound = None if max_multiplier is None else math.log(max_multiplier)
        nonzero = [abs(c) for c in self.base if c != 0.0]
        self.zero_scale = min(nonzero) if nonzero else 1.0
        self.raw = torch.zeros(len(self.slots), dtype=dtype, device=device, requires_grad=True)

    def _occurrences(
        self, u: Sequence[Any], sinh: Callable[[Any], Any], exp: Callable[[Any], Any]
    ) -> list[Any]:
        out: list[Any] = [None] * len(self.base)
        for s, occ in enumerate(self.slots):
            for i in occ:
                c0 = self.base[i]
                if self.bound is not None:
                    out[i] = c0 * exp(u[s])
                elif c0 != 0.0:
                    out[i] = c0 * sinh(u[s] + ASINH1)
                else:
                    out[i] = self.zero_scale * sinh(u[s])
        missing = [i for i, c in enumerate(out) if c is None]
        if missing:
            raise ValueError(f"constant occurrences {missing} are in no slot")
        return out

    def constants(self) -> list[Tensor]:
        """Per-occurrence constants as differentiable tensors."""
        return self._occurrences(list(self.raw.unbind()) if self.slots else [], torch.sinh, torch.exp)

    def step_kwargs(self) -> dict[str, Any]:
        return {"constants": self.constants()} if self.slots else {}

    def project(self) -> None:
        if self.bound is not None:
            with torch.no_grad():
                self.raw.clamp_(-self.bound, self.bound)

    def values(self) -> list[float]:
        u = [float(x) for x in self.raw.detach().cpu().double()]
        return [float(c) for c in self._occurrences(u, math.sinh, math.exp)]

    def apply(self, equation: Equation, values: Sequence[float]) -> Equation:
        return _with_constants(equation, values)


class EtaParams:
    """``eta``'s six parameters ``(k1, k2, a1, l1, l2, a2)`` (:data:`~harness.features.ETA_PARAM_NAMES`), tuned
    as they are (free in sign; ``a1, a2`` projected into ``[-ETA_A_MAX, ETA_A_MAX]``, where the feature clips
    them anyway), written back into the equation's ``provenance["feature_spec"]["eta_params"]``."""

    name = "eta_params"

    def __init__(self, spec: FeatureSpec, dtype: torch.dtype, device: str | torch.device) -> None:
        assert spec.eta_params is not None
        self.raw = torch.tensor(spec.eta_params, dtype=dtype, device=device, requires_grad=True)

    def step_kwargs(self) -> dict[str, Any]:
        return {"feature_params": self.raw}

    def project(self) -> None:
        with torch.no_grad():
            for i in (2, 5):  # a1, a2
                self.raw[i].clamp_(-ETA_A_MAX, ETA_A_MAX)

    def values(self) -> list[float]:
        return [float(x) for x in self.raw.detach().cpu().double()]

    def apply(self, equation: Equation, values: Sequence[float]) -> Equation:
        out = _with_constants(equation, list(equation.constants))
        spec = dict(out.provenance.get("feature_spec") or {})
        spec["eta_params"] = [float(v) for v in values]
        out.provenance["feature_spec"] = spec
        return out


def tunables(
    equation: Equation,
    *,
    max_multiplier: float | None,
    dtype: torch.dtype,
    device: str | torch.device,
    tune_features: bool = True,
) -> list[Tunable]:
    """What gradient meta-tuning tunes: the constant slots and, when the equation reads ``eta`` and
    ``tune_features``, eta's parameters (the paper tunes W, gamma and eta's parameters)."""
    out: list[Tunable] = [ConstantSlots(equation, max_multiplier, dtype, device)]
    spec = feature_spec_for(equation)
    if tune_features and spec is not None and ETA in spec.names:
        out.append(EtaParams(spec, dtype, device))
    return out


# ---------------------------------------------------------------------------------------------------
# the one-pass tuner
# ---------------------------------------------------------------------------------------------------
def _cycle(problem: Any, split: str) -> Iterator[Any]:
    """The batches of ``split`` (one pass each time), over and over."""
    while True:
        empty = True
        for batch in problem.batches(split):
            empty = False
            yield batch
        if empty:
            raise ValueError(f"the {split!r} split of {type(problem).__name__} has no batches")


def meta_tune_gradient(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    *,
    steps: int | None = None,
    unroll: int = 10,
    meta_lr: float = 0.05,
    meta_loss: str = "final",
    max_multiplier: float | None = None,
    tune_features: bool = True,
    lr: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int, float], None] | None = None,
) -> tuple[Equation, dict[str, Any]]:
    """One-pass meta-fine-tuning by truncated back-propagation through ``unroll``-step windows.

    The optimizee (seed ``seed``; its spec must give a ``val`` split, e.g. ``val_fraction`` for classifiers:
    :func:`~harness.stages.meta_tune.common.with_val_split`) is trained for ``steps`` (default: its spec's
    budget) with the equation; after each window the tunables take one Adam step (``meta_lr``) on the
    window's validation meta-loss (``meta_loss``: ``final`` | ``mean``). Constants are free in sign and
    magnitude unless ``max_multiplier`` bounds them (:class:`ConstantSlots`); ``eta``'s parameters are tuned
    too unless ``tune_features`` is false.

    Returns:
        ``(tuned equation, history)``; history has per-step ``step``/``train_loss``, per-window ``windows``
        (``end_step``, the window's ``val_loss`` before its meta step, each tunable's values after it by
        name) and ``diverged_at``. If training diverges, the last window that did not gives the values.
    """
    if meta_loss not in META_LOSSES:
        raise ValueError(f"meta_loss must be one of {', '.join(META_LOSSES)}, got {meta_loss!r}")
    if int(unroll) < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")
    eq = load_equation(equation)
    torch.manual_seed(seed)
    problem = build_problem(optimizee, seed, device)
    n_steps = spec_budget(problem, optimizee, steps)
    # tuned under the schedule it will be evaluated with
    schedule, warmup = equation_schedule(eq.provenance), equation_warmup(eq.provenance)
    params = problem.init_params()
    first = next(iter(params.values()))
    module = eq.compile(dtype=first.dtype).to(first.device)
    module.requires_grad_(False)
    tuned = tunables(
        eq, max_multiplier=max_multiplier, dtype=first.dtype, device=first.device, tune_features=tune_features
    )
    leaves = [t.raw for t in tuned if t.raw.numel()]
    meta_opt = torch.optim.Adam(leaves, lr=meta_lr) if leaves else None
    state: Mapping[str, Mapping[str, Tensor]] = init_functional_state(eq, params)
    train, val = problem.batches("train"), _cycle(problem, "val")
    _, grads = loss_and_grads(problem.loss, params, next(train))

    hist: dict[str, Any] = {
        "step": [],
        "train_loss": [],
        "windows": [],
        "diverged_at": None,
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": "val",
        "max_multiplier": max_multiplier,
        "initial_constants": [float(c) for c in eq.constants],
    }
    good = [t.values() for t in tuned]
    step = 0
    while step < n_steps:
        k = min(int(unroll), n_steps - step)
        kwargs: dict[str, Any] = {}
        for t in tuned:
            kwargs.update(t.step_kwargs())

        at = itertools.count(step)  # the run's 0-based index of each step of the window (the schedule's t)

        def update(
            p: dict[str, Tensor], g: dict[str, Tensor], st: Any, kw: dict[str, Any] = kwargs, at: Any = at
        ) -> Any:
            return functional_step(module, p, g, st, lr=lr * lr_factor(schedule, next(at), n_steps, warmup), **kw)

        window = itertools.islice(train, k)
        res = run_window(
            update, problem.loss, params, state, grads, window, meta_loss=meta_loss, holdout=next(val)
        )
        hist["step"].extend(range(step + 1, step + len(res.train_losses) + 1))
        hist["train_loss"].extend(res.train_losses)
        if res.diverged:
            hist["diverged_at"] = step + len(res.train_losses)
            break
        step += k
        params, grads = res.params, res.grads
        state = {n: {kk: vv.detach() for kk, vv in s.items()} for n, s in res.state.items()}
        meta = res.meta_loss
        value = math.nan if meta is None else float(meta.detach())
        good = [t.values() for t in tuned]
        if meta_opt is not None and meta is not None and math.isfinite(value) and meta.requires_grad:
            meta_opt.zero_grad(set_to_none=True)
            meta.backward()
            if all(x.grad is None or bool(torch.isfinite(x.grad).all()) for x in leaves):
                meta_opt.step()
                for t in tuned:
                    t.project()
        hist["windows"].append(
            {
                "end_step": step,
                "val_loss": value if math.isfinite(value) else None,
                **{t.name: t.values() for t in tuned},
            }
        )
        if on_progress is not None:  # (training step, validation meta-loss of the window)
            on_progress(step, value)
    final = good if hist["diverged_at"] is not None else [t.values() for t in tuned]
    out = eq
    for t, values in zip(tuned, final, strict=True):
        out = t.apply(out, values)
    out.provenance = {**out.provenance}
    out.provenance["meta_tune"] = {
        "method": "gradient",
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": "val",
        "max_multiplier": max_multiplier,
        "steps": n_steps,
        "optimizee": dict(optimizee),
        "seed": seed,
        "initial_constants": [float(c) for c in eq.constants],
    }
    return out, hist
