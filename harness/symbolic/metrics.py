"""Fit and readability metrics for distilled equations: R², MSE, TPF (temporal) and MC (complexity).

TPF is the paper's eq. 3 generalised by sensitivities; MC the smallest complexity on a front whose error is
within a threshold of the best (definitions: ``docs/symbolic.md``). Also :func:`fit_error`, which orders
Pareto fronts. The equation modules use :func:`r2` and :func:`mse`, so this module imports none of them:
equations and fronts are typed by small protocols.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from harness.features import parse_variable

if TYPE_CHECKING:  # pragma: no cover - torch is imported lazily, only for sensitivities
    import torch

__all__ = [
    "DifferentiableEquation",
    "ScoredEquation",
    "TPFResult",
    "FITTED_COMPLEXITY",
    "fit_error",
    "fitted_complexity",
    "mc",
    "mse",
    "r2",
    "sensitivities",
    "tpf",
]


class ScoredEquation(Protocol):
    """What :func:`fit_error` and :func:`mc` read of an equation: its fit ``metrics`` and ``complexity``."""

    @property
    def metrics(self) -> Mapping[str, float]: ...

    @property
    def complexity(self) -> int: ...


class DifferentiableEquation(Protocol):
    """What :func:`sensitivities` and :func:`tpf` read of an equation: its variables and a torch lowering."""

    @property
    def variables(self) -> Sequence[str]: ...

    def compile(self, *, dtype: torch.dtype | None = None) -> Callable[[Mapping[str, torch.Tensor]], Any]: ...


def r2(y: Any, yhat: Any) -> float:
    """Coefficient of determination in float64.

    ``1 - SS_res/SS_tot``; a constant target gives 1.0 for a perfect fit and 0.0 otherwise (as
    scikit-learn); any non-finite prediction gives ``-inf`` so the equation ranks last.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    yhat = np.broadcast_to(np.asarray(yhat, dtype=np.float64), y.shape).ravel()
    if y.size == 0:
        raise ValueError("r2 of an empty array")
    if not np.all(np.isfinite(yhat)):
        return -math.inf
    ss_res = float(np.sum((y - yhat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def mse(y: Any, yhat: Any) -> float:
    """Mean squared error in float64 (``inf`` when a prediction is not finite)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    yhat = np.broadcast_to(np.asarray(yhat, dtype=np.float64), y.shape).ravel()
    if not np.all(np.isfinite(yhat)):
        return math.inf
    return float(np.mean((y - yhat) ** 2))


def sensitivities(
    equation: DifferentiableEquation, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None
) -> dict[str, float]:
    """``{variable: mean |d update / d variable|}`` over the rows of X, by torch autograd in float64.

    Every operator of the grammar is element-wise, so the gradient of the summed output gives each row's
    own partial derivatives. Rows where a derivative is not finite are left out of that variable's mean.
    """
    import torch

    variables = list(equation.variables)
    if not variables:
        return {}
    if isinstance(X, Mapping):
        cols = {v: np.asarray(X[v], dtype=np.float64) for v in variables}
    else:
        arr = np.asarray(X, dtype=np.float64)
        if names is None or arr.ndim != 2 or len(names) != arr.shape[1]:
            raise ValueError("a 2-D X needs `names`, one per column")
        missing = [v for v in variables if v not in names]
        if missing:
            raise KeyError(f"X lacks variables {missing}")
        cols = {v: arr[:, list(names).index(v)] for v in variables}
    module = equation.compile(dtype=torch.float64)
    inputs = {v: torch.tensor(c, dtype=torch.float64, requires_grad=True) for v, c in cols.items()}
    out = module(inputs)
    grads = torch.autograd.grad(out.sum(), [inputs[v] for v in variables], allow_unused=True)
    result: dict[str, float] = {}
    for v, g in zip(variables, grads, strict=True):
        if g is None:
            result[v] = 0.0
            continue
        a = g.detach().abs().numpy()
        a = a[np.isfinite(a)]
        result[v] = float(a.mean()) if a.size else math.nan
    return result


@dataclass
class TPFResult:
    """Temporal Perception Field: ``overall`` over all (feature, lag), ``per_feature``, and the raw
    ``sensitivity`` of each variable. NaN where no sensitivity is positive (e.g. no variables)."""

    overall: float
    per_feature: dict[str, float] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "per_feature": dict(self.per_feature),
            "sensitivity": dict(self.sensitivity),
        }


def _weighted_lag(pairs: Sequence[tuple[int, float]]) -> float:
    total = sum(s for _, s in pairs if math.isfinite(s))
    if total <= 0:
        return math.nan
    return sum(lag * s for lag, s in pairs if math.isfinite(s)) / total


def tpf(
    equation: DifferentiableEquation, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None
) -> TPFResult:
    """TPF by sensitivity (``docs/symbolic.md``); equals eq. 3 for linear forms ``sum_i c_i g_{t-i}``."""
    sens = sensitivities(equation, X, names)
    by_feature: dict[str, list[tuple[int, float]]] = {}
    for v, s in sens.items():
        f, lag = parse_variable(v)
        by_feature.setdefault(f, []).append((lag, s))
    per_feature = {f: _weighted_lag(p) for f, p in sorted(by_feature.items())}
    overall = _weighted_lag([p for ps in by_feature.values() for p in ps])
    return TPFResult(overall, per_feature, sens)


FITTED_COMPLEXITY = "complexity_scaled"
"""Metric under which a distilled (unscaled) equation keeps the complexity of the form that was fitted."""


def fitted_complexity(eq: ScoredEquation) -> int:
    """Complexity of the form the SR backend fitted (what ``max_complexity`` bounds): the equation's
    :data:`FITTED_COMPLEXITY` metric when it has one (distilled equations over raw features), else its own
    ``complexity``. Pareto fronts, MC and choices by complexity all use this."""
    v = eq.metrics.get(FITTED_COMPLEXITY)
    return int(v) if v is not None and math.isfinite(v) else eq.complexity


def fit_error(eq: ScoredEquation, split: str = "auto") -> float:
    """Fit error that orders Pareto fronts: ``1 - r2_val`` (held-out) when known, else ``1 - r2_train``,
    else the backend's ``loss``; ``split="val"``/``"train"`` forces one R² (inf when it is missing)."""
    m = eq.metrics
    keys = {"auto": ("r2_val", "r2_train"), "val": ("r2_val",), "train": ("r2_train",)}.get(split)
    if keys is None:
        raise ValueError(f"split must be 'auto', 'val' or 'train', got {split!r}")
    for k in keys:
        if k in m:
            v = 1.0 - m[k]
            return v if math.isfinite(v) else math.inf
    if split == "auto" and "loss" in m:
        return m["loss"] if math.isfinite(m["loss"]) else math.inf
    return math.inf


def mc(
    front: Iterable[ScoredEquation],
    threshold: float = 0.01,
    *,
    split: str = "auto",
    relative: bool = False,
) -> int:
    """Minimal complexity: smallest :func:`fitted_complexity` whose error is within ``threshold`` of the best.

    ``front`` is a :class:`~harness.symbolic.lang.front.ParetoFront` or any iterable of equations. Error per
    equation is :func:`fit_error` (``1 - r2_val`` when it has a held-out score, else ``1 - r2_train``, else
    its ``loss``; ``split="val"``/``"train"`` forces one). ``relative=True`` reads the threshold as a
    fraction of the best error instead of an absolute gap.
    """
    scored = [(fitted_complexity(e), fit_error(e, split)) for e in front]
    scored = [(c, err) for c, err in scored if math.isfinite(err)]
    if not scored:
        raise ValueError("MC of a front without any finite error")
    best = min(err for _, err in scored)
    limit = best + (threshold * abs(best) if relative else threshold)
    return min(c for c, err in scored if err <= limit)
