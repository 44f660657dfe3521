"""Named equation families: hand-written update rules as :class:`~harness.symbolic.lang.Equation` s.

An equation gives the DELTA added to the parameters, ``x_{t+1} = x_t + lr * eq(features)`` (Adam is
``-lr * m_hat_0``). Every builder records its feature constants (``FeatureSpec.to_dict()``) in
``provenance["feature_spec"]`` and names the family in ``provenance["family"]``. :func:`adam_equation`:
exactly ``torch.optim.Adam`` without weight decay; :func:`eq6`: the paper's scalable rule (eq. 6,
``-sum W[f, tau] * gamma * tanh(f_{t-tau} / gamma)``, one shared ``gamma`` tied across occurrences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sympy

from harness.features import ADAM_BETAS, ADAM_EPS, ADAM_LR, FeatureSpec, variable_name
from harness.symbolic.lang.expression import Equation

__all__ = ["FAMILIES", "adam_equation", "build_family", "eq6", "sgd_equation"]


def _var(name: str) -> sympy.Symbol:
    # the equation module's variable symbols are real; matching assumptions keeps one symbol per name
    return sympy.Symbol(name, real=True)


def adam_equation(
    lr: float = ADAM_LR, beta1: float = ADAM_BETAS[0], beta2: float = ADAM_BETAS[1], eps: float = ADAM_EPS
) -> Equation:
    """Adam as an equation: ``-lr*m_hat_0`` with ``m_hat`` computed with ``(beta1, beta2, eps)``.

    Run by :class:`~harness.symbolic.optim.optimizer.SymbolicOptimizer` it follows ``torch.optim.Adam(lr, betas,
    eps)`` (one constant, ``-lr``).
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    spec = FeatureSpec(("m_hat",), lags=1, beta1=beta1, beta2=beta2, eps=eps)
    prov = {
        "family": "adam",
        "feature_spec": spec.to_dict(),
        "params": {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps},
    }
    return Equation(
        sympy.Symbol("_lr", real=True) * _var("m_hat_0"),
        {sympy.Symbol("_lr", real=True): -lr},
        provenance=prov,
    )


def sgd_equation(lr: float = 0.01) -> Equation:
    """Plain SGD, ``-lr*g_0`` (a sanity-check family; no feature state at all)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    spec = FeatureSpec(("g",), lags=1)
    k = sympy.Symbol("_lr", real=True)
    return Equation(
        k * _var("g_0"),
        {k: -lr},
        provenance={"family": "sgd", "feature_spec": spec.to_dict(), "params": {"lr": lr}},
    )


Weights = (
    float | Mapping[str, "float | Sequence[float]"] | Sequence[float] | Sequence[Sequence[float]] | np.ndarray
)
"""Eq. 6's ``W``: a scalar, a row per feature (a scalar or ``L`` values), or a ``[|G|, L]`` array."""


def _weights(W: Weights | None, features: Sequence[str], L: int, lr: float) -> np.ndarray:
    """W as a ``[|G|, L]`` array from None (uniform ``lr / (|G| * L)``), a scalar, a per-feature mapping
    or a nested sequence."""
    shape = (len(features), L)
    if W is None:
        return np.full(shape, lr / (len(features) * L))
    if isinstance(W, Mapping):
        unknown = set(W) - set(features)
        if unknown:
            raise ValueError(f"W has rows for features {sorted(unknown)} not in {list(features)}")
        rows = []
        for f in features:
            row = np.asarray(W.get(f, 0.0), dtype=np.float64).reshape(-1)
            rows.append(np.full(L, row[0]) if row.size == 1 else row)
        arr = np.stack(rows)
    else:
        arr = np.asarray(W, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(shape, float(arr))
        elif arr.ndim == 1 and arr.size == len(features):
            arr = np.repeat(arr[:, None], L, axis=1)
    if arr.shape != shape:
        raise ValueError(f"W must have shape {shape} (features x lags), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("W must be finite")
    return arr


def eq6(
    features: Sequence[str] = ("m_hat", "g_hat"),
    L: int = 2,
    W: Weights | None = None,
    gamma: float = 1.0,
    *,
    lr: float = 1e-3,
    beta1: float = 0.95,
    beta2: float = 0.95,
    eps: float = 1e-8,
    norm_p: float = 2.0,
    eta_params: Sequence[float] | None = None,
) -> Equation:
    """The paper's eq. 6: ``-sum_{f, tau<L} W[f,tau]*gamma*tanh(f_{t-tau}/gamma)``.

    Args:
        features: the set G (any :mod:`harness.features` names: ``m_hat``, ``g_hat``, ``eta``, ``m09``,
            ``mn099``...); the paper's is ``("m_hat", "g_hat", "eta")``.
        L: lags per feature (tau = 0..L-1).
        W: weights, ``[|G|, L]`` (nested sequence / array), a scalar, ``{feature: weight or [L] weights}``, or a
            length-|G| sequence (one weight per feature for every lag). Default: ``lr / (|G| * L)`` everywhere,
            so the rule starts near an Adam-like step of size ``lr``. Positive W means descent.
        gamma: the tanh scale (shared by every term; one tie group).
        lr: only sets the default W.
        beta1, beta2, eps, norm_p: feature constants (RNNprop's 0.95/0.95 by default), kept in provenance.
        eta_params: ``(k1, k2, a1, l1, l2, a2)`` of ``eta`` when G has it (default
            :data:`~harness.features.ETA_DEFAULT_PARAMS`), kept in provenance; meta-tuning can tune them.
    """
    features = tuple(features)
    if not features:
        raise ValueError("eq6 needs at least one feature")
    if int(L) < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    L = int(L)
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    spec = FeatureSpec(  # validates names and eta's parameters
        features,
        lags=L,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        norm_p=norm_p,
        eta_params=None if eta_params is None else tuple(eta_params),
    )
    w = _weights(W, features, L, lr)
    g = sympy.Symbol("_gamma", real=True)
    values: dict[sympy.Symbol, float] = {g: float(gamma)}
    terms = []
    for i, f in enumerate(features):
        for tau in range(L):
            ws = sympy.Symbol(f"_w_{i}_{tau}", real=True)
            values[ws] = float(w[i, tau])
            terms.append(ws * g * sympy.tanh(_var(variable_name(f, tau)) / g))
    prov = {
        "family": "eq6",
        "form": "eq6",
        "feature_spec": spec.to_dict(),
        "params": {"features": list(features), "L": L, "gamma": float(gamma), "W": w.tolist()},
    }
    eq, occ = Equation._with_occurrences(-sympy.Add(*terms), values, provenance=prov)
    eq.provenance["tie_groups"] = [sorted(occ[g])]
    return eq


#: family name -> builder, for configs (``{"family": "eq6", "L": 2}``)
FAMILIES = {"adam": adam_equation, "eq6": eq6, "sgd": sgd_equation}


def build_family(name: str, **kwargs: Any) -> Equation:
    """Build a named family (``adam``, ``eq6``, ``sgd``) with keyword arguments."""
    try:
        fn = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown equation family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
    return fn(**kwargs)
