"""Least-squares constants of a given equation form (variable projection), optionally anchored at zero.

:func:`fit_constants` solves the *linear* constants (one that multiplies a whole top-level term and appears
nowhere else) exactly by ``lstsq`` and the others by ``scipy.optimize.least_squares`` on the reduced
problem. ``anchor_zero=True`` fits ``f(x) - f(0)``: the least-squares fit of a rule that is zero at zero
(``docs/symbolic.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import sympy

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.lowering import NP_OPS, closure

__all__ = ["fit_constants"]


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
    anchor_zero: bool = False,
) -> Equation:
    """Least-squares constants for ``form`` on (X, y), starting from its current constant values.

    Args:
        form: the equation whose constants are free (their values are the initial guess).
        tie_groups: lists of constant indices that must share one value (e.g. eq. 6's gamma).
        max_nfev: budget of the nonlinear solver (ignored when the form is linear in its constants);
            0 keeps the nonlinear constants and solves the linear ones only.
        anchor_zero: fit ``f(x) - f(0)`` (see the module docstring); the returned equation is ``f`` with
            the fitted constants, whose ``f(0)`` the caller cancels.
    Returns:
        ``form`` with fitted constants (tied ones equal) and ``provenance["tie_groups"]`` when tied.
    """
    env = _env(X, names)
    env0 = {k: np.zeros(1) for k in env}
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

    def evaluate(
        at: dict[str, np.ndarray], consts: list[np.float64], rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            A = (
                np.stack(
                    [np.broadcast_to(np.asarray(c((at, consts)), dtype=np.float64), (rows,)) for c in cols],
                    axis=1,
                )
                if cols
                else np.zeros((rows, 0))
            )
            off = np.zeros(rows)
            for c in offset_terms:
                off = off + np.asarray(c((at, consts)), dtype=np.float64)
        return A, np.broadcast_to(off, (rows,))

    def design(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vals = values.copy()
        for gi, t in zip(nonlinear_groups, theta, strict=True):
            vals[groups[gi]] = t
        consts = [np.float64(v) for v in vals]
        A, off = evaluate(env, consts, n)
        if anchor_zero:
            A0, off0 = evaluate(env0, consts, 1)
            A, off = A - A0, off - off0
        return A, off, vals

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
    theta = theta0
    if nonlinear_groups and max_nfev > 0:
        method = "lm" if n >= len(theta0) else "trf"
        res = scipy.optimize.least_squares(
            lambda t: solve(t)[0],
            theta0,
            method=method,
            max_nfev=max_nfev,
            x_scale="jac" if method == "trf" else 1.0,
        )
        # least_squares may end on a worse point than it started from (a failed step): keep the better
        if np.all(np.isfinite(res.x)) and np.sum(solve(res.x)[0] ** 2) <= np.sum(solve(theta0)[0] ** 2):
            theta = res.x
    _, vals = solve(theta)
    out = form.with_constants([float(v) for v in vals])
    out.provenance = dict(form.provenance)
    if tie_groups:
        out.provenance["tie_groups"] = [list(g) for g in groups if len(g) > 1]
    return out
