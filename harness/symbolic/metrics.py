"""Fit and readability metrics for distilled equations: R², MSE, TPF (temporal) and MC (complexity).

TPF (paper eq. 3) for a linear rule ``sum_i c_i g_{t-i}`` is ``sum_i i*|c_i| / sum_i |c_i|``. For any
equation we use sensitivities ``s_{f,i} = mean_n |d update / d f_{t-i}|`` over a data set, and
``TPF_f = sum_i i*s_{f,i} / sum_i s_{f,i}`` per feature ``f``, plus an overall TPF over every (feature,
lag). On linear forms ``s_i = |c_i|``, so this is exactly eq. 3.

MC: the smallest complexity on a Pareto front whose error (held-out ``1 - R²`` when available) is within
a threshold of the front's best error.

This module imports nothing from :mod:`harness.symbolic.equation` at import time (that module uses
:func:`r2`), and takes equations and fronts duck-typed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from harness.symbolic.equation import Equation, ParetoFront

__all__ = ["TPFResult", "mc", "mse", "r2", "sensitivities", "tpf"]


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
    equation: Equation, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None
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
    """Temporal preference factor: ``overall`` over all (feature, lag), ``per_feature``, and the raw
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
    equation: Equation, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None
) -> TPFResult:
    """TPF by sensitivity (see module docstring); equals eq. 3 for linear forms ``sum_i c_i g_{t-i}``."""
    from harness.symbolic.equation import split_variable

    sens = sensitivities(equation, X, names)
    by_feature: dict[str, list[tuple[int, float]]] = {}
    for v, s in sens.items():
        f, lag = split_variable(v)
        by_feature.setdefault(f, []).append((lag, s))
    per_feature = {f: _weighted_lag(p) for f, p in sorted(by_feature.items())}
    overall = _weighted_lag([p for ps in by_feature.values() for p in ps])
    return TPFResult(overall, per_feature, sens)


def mc(
    front: ParetoFront | Sequence[Equation],
    threshold: float = 0.01,
    *,
    split: str = "auto",
    relative: bool = False,
) -> int:
    """Minimal complexity: smallest complexity whose error is within ``threshold`` of the best error.

    Error per equation is ``1 - r2_val`` when it has a held-out score, else ``1 - r2_train``, else its
    ``loss`` (``split="val"``/``"train"`` forces one; see :class:`~harness.symbolic.equation.ParetoFront`). ``relative=True`` reads the threshold
    as a fraction of the best error instead of an absolute gap.
    """
    from harness.symbolic.equation import _error

    eqs = list(front.equations if hasattr(front, "equations") else front)
    scored = [(e.complexity, _error(e, split)) for e in eqs]
    scored = [(c, err) for c, err in scored if math.isfinite(err)]
    if not scored:
        raise ValueError("MC of a front without any finite error")
    best = min(err for _, err in scored)
    limit = best + (threshold * abs(best) if relative else threshold)
    return min(c for c, err in scored if err <= limit)
