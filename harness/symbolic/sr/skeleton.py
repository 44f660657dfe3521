"""Fit the constants of a given equation FORM by least squares; plus a fast linear baseline backend.

:func:`fit_constants` separates the constants into *linear* ones (a constant that multiplies a whole
top-level term and appears nowhere else) and *nonlinear* ones (everything else, including every constant
of a tie group). For fixed nonlinear values the linear ones are solved exactly by ``lstsq``; the nonlinear
ones are found by ``scipy.optimize.least_squares`` on that reduced problem (variable projection). A form
linear in all its constants is therefore solved exactly in one ``lstsq``.

The paper's scalable rule (eq. 6), ``psi = -sum_{g,tau} W[g,tau]*gamma*tanh(g_{t-tau}/gamma)`` with one
shared ``gamma``, is :func:`tanh_sum_form` (the minus sign is absorbed into ``W``) and is fit with its
gamma occurrences tied.

Backends: ``skeleton`` (``settings.extra["form"]``: ``"eq6"`` or an expression text or an Equation, with
optional ``"tie_groups"`` and ``"gamma"``) and ``linear`` (ordinary least squares over all columns, as a
front of nested models with the most important columns first; ``extra``: ``fit_intercept`` (True),
``prune_tol`` (0.0)).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import sympy

from harness.symbolic.expression import Equation
from harness.symbolic.front import ParetoFront
from harness.symbolic.lowering import NP_OPS, closure
from harness.symbolic.names import var_symbol
from harness.symbolic.sr.base import SRSettings, check_fit_inputs, finish_front

__all__ = ["LinearBackend", "SkeletonBackend", "fit_constants", "tanh_sum_form", "tanh_sum_parameters"]


def _env(X: np.ndarray | Mapping[str, Any], names: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(X, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in X.items()}
    X = np.asarray(X, dtype=np.float64)
    if names is None or X.ndim != 2 or len(names) != X.shape[1]:
        raise ValueError("a 2-D X needs `names`, one per column")
    return {n: X[:, j] for j, n in enumerate(names)}


def _normalize_groups(n: int, tie_groups: Sequence[Sequence[int]] | None) -> list[list[int]]:
    groups: list[list[int]] = []
    seen: set[int] = set()
    for g in tie_groups or ():
        g = [int(i) for i in g]
        if any(not 0 <= i < n or i in seen for i in g) or len(set(g)) != len(g):
            raise ValueError(f"bad tie group {g} for an equation with {n} constants")
        seen.update(g)
        if g:
            groups.append(g)
    groups += [[i] for i in range(n) if i not in seen]
    return groups


def fit_constants(
    form: Equation,
    X: np.ndarray | Mapping[str, Any],
    y: np.ndarray,
    names: Sequence[str] | None = None,
    *,
    tie_groups: Sequence[Sequence[int]] | None = None,
    max_nfev: int = 200,
) -> Equation:
    """Least-squares constants for ``form`` on (X, y), starting from its current constant values.

    Args:
        form: the equation whose constants are free (their values are the initial guess).
        tie_groups: lists of constant indices that must share one value (e.g. eq. 6's gamma).
        max_nfev: budget of the nonlinear solver (ignored when the form is linear in its constants).
    Returns:
        ``form`` with fitted constants (tied ones equal) and ``provenance["tie_groups"]`` when tied.
    """
    env = _env(X, names)
    y = np.asarray(y, dtype=np.float64).ravel()
    n_const = form.n_constants
    if n_const == 0:
        return form.copy()
    syms = form.constant_symbols
    index = {s: i for i, s in enumerate(syms)}
    groups = _normalize_groups(n_const, tie_groups)
    group_of = {i: gi for gi, g in enumerate(groups) for i in g}

    # pick one linear constant per top-level term
    linear: dict[int, int] = {}  # term index -> constant index
    terms = sympy.Add.make_args(form.expr)
    for ti, term in enumerate(terms):
        for f in sympy.Mul.make_args(term):
            if isinstance(f, sympy.Symbol) and f in index and len(groups[group_of[index[f]]]) == 1:
                linear[ti] = index[f]
                break
    linear_consts = set(linear.values())
    nonlinear_groups = [gi for gi, g in enumerate(groups) if not (len(g) == 1 and g[0] in linear_consts)]

    cols = []
    offset_terms = []
    for ti, term in enumerate(terms):
        if ti in linear:
            cols.append(closure(term.xreplace({syms[linear[ti]]: sympy.Integer(1)}), index, NP_OPS))
        else:
            offset_terms.append(closure(term, index, NP_OPS))
    lin_order = [linear[ti] for ti in sorted(linear)]
    n = y.shape[0]
    values = np.array(form.constants, dtype=np.float64)

    def design(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vals = values.copy()
        for gi, t in zip(nonlinear_groups, theta, strict=True):
            vals[groups[gi]] = t
        consts = [np.float64(v) for v in vals]
        with np.errstate(all="ignore"):
            A = (
                np.stack(
                    [np.broadcast_to(np.asarray(c((env, consts)), dtype=np.float64), (n,)) for c in cols],
                    axis=1,
                )
                if cols
                else np.zeros((n, 0))
            )
            off = np.zeros(n)
            for c in offset_terms:
                off = off + np.asarray(c((env, consts)), dtype=np.float64)
        return A, np.broadcast_to(off, (n,)), vals

    def solve(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A, off, vals = design(theta)
        target = y - off
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(target))):
            return np.full(n, 1e6 * (np.std(y) + 1.0)), vals
        if A.shape[1]:
            beta = np.linalg.lstsq(A, target, rcond=None)[0]
            vals[lin_order] = beta
            resid = target - A @ beta
        else:
            resid = target
        return resid, vals

    theta0 = np.array([values[groups[gi][0]] for gi in nonlinear_groups], dtype=np.float64)
    if nonlinear_groups:
        method = "lm" if n >= len(theta0) else "trf"
        res = scipy.optimize.least_squares(
            lambda t: solve(t)[0],
            theta0,
            method=method,
            max_nfev=max_nfev,
            x_scale="jac" if method == "trf" else 1.0,
        )
        theta = res.x
    else:
        theta = theta0
    _, vals = solve(theta)
    out = form.with_constants([float(v) for v in vals])
    out.provenance = dict(form.provenance)
    if tie_groups:
        out.provenance["tie_groups"] = [list(g) for g in groups if len(g) > 1]
    return out


def tanh_sum_form(
    variables: Sequence[str], gamma: float = 1.0, weights: Mapping[str, float] | None = None
) -> tuple[Equation, list[list[int]]]:
    """Eq. 6's form ``sum_v W_v*gamma*tanh(v/gamma)`` over ``variables`` and the tie group of gamma.

    Returns the equation (W from ``weights`` or 0.0) and ``[[indices of every gamma occurrence]]``, to
    pass as ``tie_groups`` to :func:`fit_constants` or :meth:`Equation.compile`.
    """
    if not variables:
        raise ValueError("tanh_sum_form needs at least one variable")
    g = sympy.Symbol("_gamma", real=True)
    values: dict[sympy.Symbol, float] = {g: float(gamma)}
    terms = []
    for j, v in enumerate(variables):
        w = sympy.Symbol(f"_w{j}", real=True)
        values[w] = float((weights or {}).get(v, 0.0))
        terms.append(w * g * sympy.tanh(var_symbol(v) / g))
    eq, occ = Equation._with_occurrences(sympy.Add(*terms), values, provenance={"form": "eq6"})
    return eq, [sorted(occ[g])]


def tanh_sum_parameters(
    eq: Equation, tie_group: Sequence[int] | None = None
) -> tuple[dict[str, float], float]:
    """Read ``({variable: W}, gamma)`` back from a (fitted) :func:`tanh_sum_form` equation.

    ``tie_group`` defaults to ``eq.provenance["tie_groups"][0]`` (set by :func:`fit_constants`).
    """
    if tie_group is None:
        groups = eq.provenance.get("tie_groups") or []
        if not groups:
            raise ValueError("no tie group given and none in the equation's provenance")
        gamma_idx = {int(i) for i in groups[0]}
    else:
        gamma_idx = set(tie_group)
    syms = eq.constant_symbols
    weights: dict[str, float] = {}
    for term in sympy.Add.make_args(eq.expr):
        tanhs = [a for a in sympy.Mul.make_args(term) if isinstance(a, sympy.tanh)]
        ws = [
            eq.constants[syms.index(a)]
            for a in sympy.Mul.make_args(term)
            if a in syms and syms.index(a) not in gamma_idx
        ]
        if len(tanhs) != 1 or len(ws) != 1:
            raise ValueError(f"term {term} is not of the form W*gamma*tanh(x/gamma)")
        (var,) = [s.name for s in tanhs[0].free_symbols if isinstance(s, sympy.Symbol) and s not in syms]
        weights[var] = ws[0]
    return weights, eq.constants[min(gamma_idx)]


class SkeletonBackend:
    """Fit the constants of a fixed form (``extra["form"]``); the front holds the fitted equation."""

    name = "skeleton"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: SRSettings) -> ParetoFront:
        X, y, names = check_fit_inputs(X, y, names)
        t0 = time.perf_counter()
        form_spec = settings.extra.get("form", "eq6")
        tie = settings.extra.get("tie_groups")
        is_eq6 = isinstance(form_spec, str) and form_spec.strip().lower() in ("eq6", "tanh_sum")
        if is_eq6:
            form, tie = tanh_sum_form(names, gamma=float(settings.extra.get("gamma", 1.0)))
        elif isinstance(form_spec, Equation):
            form = form_spec
        elif isinstance(form_spec, str):
            form = Equation.parse(form_spec, allowed_variables=names)
        else:
            raise ValueError(
                "skeleton backend: settings.extra['form'] must be 'eq6', an expression or an Equation"
            )
        max_nfev = int(settings.extra.get("max_nfev", max(50, settings.iterations)))
        fitted = fit_constants(form, X, y, names, tie_groups=tie, max_nfev=max_nfev)
        if is_eq6 and tie:
            gam = [fitted.constants[i] for i in tie[0]]
            if gam and gam[0] < 0:  # W*gamma*tanh(x/gamma) is even in gamma: report gamma > 0
                fitted = fitted.with_constants(
                    [-v if i in tie[0] else v for i, v in enumerate(fitted.constants)]
                )
                fitted.provenance = {"form": "eq6", "tie_groups": [list(tie[0])]}
        prov = {
            "backend": self.name,
            "seed": settings.seed,
            "form": form.template,
            "time_s": time.perf_counter() - t0,
        }
        return finish_front([fitted], X, y, names, prov, prune=False)


class LinearBackend:
    """Ordinary least squares over all columns, as a front of nested models (most important first).

    Importance is ``|coef| * std(column)`` in the full fit; model k refits the k most important columns.
    Models above ``settings.max_complexity`` are left out. Fast, deterministic, a baseline for SR.
    """

    name = "linear"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: SRSettings) -> ParetoFront:
        X, y, names = check_fit_inputs(X, y, names)
        t0 = time.perf_counter()
        intercept = bool(settings.extra.get("fit_intercept", True))
        prune_tol = float(settings.extra.get("prune_tol", 0.0))
        n, f = X.shape
        A = np.column_stack([X, np.ones(n)]) if intercept else X
        gram = A.T @ A
        rhs = A.T @ y
        full = np.linalg.lstsq(A, y, rcond=None)[0]
        importance = np.abs(full[:f]) * X.std(axis=0)
        order = [
            j
            for j in np.argsort(-importance, kind="stable")
            if importance[j] > prune_tol * (y.std() + 1e-300) or prune_tol == 0.0
        ]
        equations = []
        ks = range(0 if intercept else 1, len(order) + 1)
        for k in ks:
            idx = list(order[:k]) + ([f] if intercept else [])
            if not idx:
                continue
            beta = np.linalg.lstsq(gram[np.ix_(idx, idx)], rhs[idx], rcond=None)[0]
            values: dict[sympy.Symbol, float] = {}
            terms = []
            for j, b in zip(idx, beta, strict=True):
                s = sympy.Symbol(f"_b{j}", real=True)
                values[s] = float(b)
                terms.append(s if j == f else s * var_symbol(names[j]))
            eq = Equation(sympy.Add(*terms), values)
            if eq.complexity > settings.max_complexity:
                break
            equations.append(eq)
        prov = {
            "backend": self.name,
            "seed": settings.seed,
            "fit_intercept": intercept,
            "time_s": time.perf_counter() - t0,
        }
        return finish_front(equations, X, y, names, prov)
