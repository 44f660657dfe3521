"""The SR backend protocol, its settings, and helpers every backend shares.

A backend is registered in :data:`harness.registry.SR_BACKENDS` and instantiated with no arguments;
``fit(X, y, names, settings)`` returns a :class:`~harness.symbolic.lang.ParetoFront` scored by US in float64
on the equations returned. :func:`finish_front` checks the two rules of every built-in backend: no
gradient-free term unless ``SRSettings.allow_offset`` (:mod:`harness.symbolic.sr.offset`), and complexity
at most ``settings.max_complexity``. Details: ``docs/symbolic.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.names import split_variable
from harness.symbolic.sr.offset import is_zero_at_zero, zero_tolerance
from harness.symbolic.sr.settings import DEFAULT_OPERATORS, PAPER_OPERATORS, SRSettings

__all__ = [
    "DEFAULT_OPERATORS",
    "PAPER_OPERATORS",
    "SRBackend",
    "SRSettings",
    "check_fit_inputs",
    "finish_front",
]


@runtime_checkable
class SRBackend(Protocol):
    """What the distill stage needs from a symbolic-regression engine."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, reason a user can act on)."""
        ...

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: SRSettings) -> ParetoFront:
        """Search equations ``y ~ f(X)`` over columns named ``names``; return the Pareto front."""
        ...


def check_fit_inputs(X: Any, y: Any, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate and convert fit inputs: float64 ``X [N, F]``, ``y [N]``, F ``feature_lag`` names, all finite."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    names = [str(n) for n in names]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [N, F], got shape {X.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if X.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} names for {X.shape[1]} columns")
    if len(set(names)) != len(names):
        raise ValueError("duplicate column names")
    for n in names:
        split_variable(n)
    if not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
        raise ValueError("X and y must be finite (drop or clip NaN/inf rows first)")
    return X, y, names


def finish_front(
    equations: Iterable[Equation],
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    provenance: Mapping[str, Any],
    *,
    settings: SRSettings | None = None,
    prune: bool = True,
) -> ParetoFront:
    """Score each equation on the training data in float64, drop non-finite ones, build the front.

    With ``settings``, also leave out every equation whose complexity exceeds ``settings.max_complexity``
    and, unless ``settings.allow_offset``, every equation that is not zero at all-zero inputs (exactly, or
    to float64 rounding, :func:`~harness.symbolic.sr.offset.zero_tolerance`: the backends already removed
    such terms; this is the last check). How many were left out, and why, is in
    the front's ``provenance["left_out"]``. The front carries ``provenance``; each equation gets its
    ``backend`` and ``seed`` entries.
    """
    scored = []
    tol = zero_tolerance(y)
    left_out = {"over_max_complexity": 0, "nonzero_at_zero": 0, "non_finite_fit": 0}
    for eq in equations:
        if settings is not None and eq.complexity > settings.max_complexity:
            left_out["over_max_complexity"] += 1
            continue
        if settings is not None and not settings.allow_offset and not is_zero_at_zero(eq, tol):
            left_out["nonzero_at_zero"] += 1
            continue
        eq = eq.score(X, y, names, "train")
        if not math.isfinite(eq.metrics["r2_train"]):
            left_out["non_finite_fit"] += 1
            continue
        small = {k: provenance[k] for k in ("backend", "seed") if k in provenance}
        eq.provenance = {**small, **eq.provenance}
        scored.append(eq)
    prov = dict(provenance)
    counts = {k: v for k, v in left_out.items() if v}
    if counts:
        prov["left_out"] = {**dict(prov.get("left_out") or {}), **counts}
    front = ParetoFront(scored, prov)
    return front.nondominated("train") if prune else front
