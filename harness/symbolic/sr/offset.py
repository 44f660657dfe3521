"""No gradient-free term: the rule every SR backend returns is zero when all its inputs are zero.

A gradient-free term (an additive constant, or one hidden in a term: ``c*tanh(w*g_0 + b)``) moves every
weight by the same amount each step, a drift growing with the horizon; the criterion is numeric,
``f(0) == 0`` in float64 (:func:`is_zero_at_zero`). :func:`remove_offset` drops constant terms, refits the
constants on the zero-anchored model ``f(x) - f(0)`` and cancels any remaining ``f(0)`` with an added
constant (:func:`zero_at_zero`). The steps, and how each backend gets there: ``docs/symbolic.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sympy

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.lowering import NP_OPS, closure
from harness.symbolic.lang.names import is_const_symbol
from harness.symbolic.sr.refit import fit_constants

__all__ = [
    "REFIT_MAX_NFEV",
    "ZERO_RTOL",
    "drop_offset_terms",
    "has_variable",
    "is_zero_at_zero",
    "offset_terms",
    "remove_offset",
    "value_at_zero",
    "zero_at_zero",
    "zero_tolerance",
]

REFIT_MAX_NFEV = 100
"""Budget (function evaluations) of the nonlinear part of the refit in :func:`remove_offset`."""

ZERO_RTOL = 1e-12
"""Largest ``|f(0)|`` accepted as zero, relative to the target's RMS (see :func:`zero_tolerance`)."""


def has_variable(e: sympy.Basic) -> bool:
    """Whether ``e`` reads an input variable (any symbol that is not a constant ``c0..cN``)."""
    return any(isinstance(s, sympy.Symbol) and not is_const_symbol(s) for s in e.free_symbols)


def value_at_zero(eq: Equation) -> float:
    """``f(0)``: the equation in float64 with every input at zero (NaN where it is undefined there)."""
    out = eq.evaluate({v: np.zeros(1) for v in eq.variables})
    return float(np.ravel(out)[0])


def offset_terms(eq: Equation) -> list[sympy.Expr]:
    """The top-level additive terms of ``eq`` that read no input (constants, constant subexpressions)."""
    return [t for t in sympy.Add.make_args(eq.expr) if not has_variable(t)]


def _rebuild(eq: Equation, expr: sympy.Expr, values: Mapping[sympy.Symbol, float] | None = None) -> Equation:
    vals = dict(zip(eq.constant_symbols, eq.constants, strict=True)) if values is None else dict(values)
    used = {s: vals[s] for s in expr.free_symbols if isinstance(s, sympy.Symbol) and s in vals}
    return Equation(expr, used, provenance=eq.provenance)


def drop_offset_terms(eq: Equation) -> Equation | None:
    """``eq`` without its top-level terms that read no input; None when no term with an input is left."""
    terms = sympy.Add.make_args(eq.expr)
    keep = [t for t in terms if has_variable(t)]
    if not keep:
        return None
    return eq.copy() if len(keep) == len(terms) else _rebuild(eq, sympy.Add(*keep))


def _distributed(expr: sympy.Expr) -> sympy.Expr:
    """Distribute constant factors over a sum they multiply, at the top level (recursively)."""

    def split(term: sympy.Expr) -> list[sympy.Expr]:
        if isinstance(term, sympy.Mul):
            sums = [a for a in term.args if isinstance(a, sympy.Add)]
            rest = [a for a in term.args if not isinstance(a, sympy.Add)]
            if len(sums) == 1 and not any(has_variable(r) for r in rest):
                coef = sympy.Mul(*rest)
                return [p for t in sympy.Add.make_args(sums[0]) for p in split(coef * t)]
        return [term]

    return sympy.Add(*[p for t in sympy.Add.make_args(expr) for p in split(t)])


def _at_zero(eq: Equation, part: sympy.Expr, values: Mapping[sympy.Symbol, float]) -> float:
    """A subexpression of ``eq`` (constants from ``values``) in float64 with every input at zero."""
    index = {s: i for i, s in enumerate(values)}
    env = {v: np.zeros(1) for v in eq.variables}
    with np.errstate(all="ignore"):
        out = closure(part, index, NP_OPS)((env, [np.float64(v) for v in values.values()]))
    return float(np.ravel(np.asarray(out, dtype=np.float64))[0])


def _grouped(eq: Equation) -> Equation | None:
    """Each top-level term ``c*h`` that is not zero at zero rewritten ``c*(h + k)`` with ``k = -h(0)``.

    ``h(0) + k`` is then exactly 0 in floating point (two operands), so the whole rule is exactly zero at
    zero whatever order the terms are summed in. None when such a term has no constant factor or is a
    constant itself.
    """
    values: dict[sympy.Symbol, float] = dict(zip(eq.constant_symbols, eq.constants, strict=True))
    terms: list[sympy.Expr] = []
    for t in sympy.Add.make_args(eq.expr):
        if _at_zero(eq, t, values) == 0.0:
            terms.append(t)
            continue
        if not has_variable(t):  # a constant term already: adjust that one instead
            return None
        factors = list(sympy.Mul.make_args(t))
        scale = next((f for f in factors if isinstance(f, sympy.Symbol) and f in values), None)
        if scale is None:
            return None
        factors.remove(scale)
        h = sympy.Mul(*factors)
        hz = _at_zero(eq, h, values)
        if not math.isfinite(hz):
            return None
        k = sympy.Symbol(f"_k{len(values)}", real=True)
        values[k] = -hz
        terms.append(scale * (h + k))
    return Equation(sympy.Add(*terms), values, metrics=eq.metrics, provenance=eq.provenance)


def zero_at_zero(eq: Equation, *, tries: int = 32) -> Equation | None:
    """``eq`` with ``f(0)`` cancelled (float64), or None when ``f(0)`` is not finite.

    An equation already zero at zero is returned as is. Otherwise each term ``c*h`` that is not zero at
    zero becomes ``c*(h + k)`` with ``k = -h(0)``: exactly zero at zero. Where that is not possible (a term
    without a constant factor) or leaves a residue, a lone top-level constant is adjusted, or one added,
    ulp by ulp towards a zero residue; a sum of three or more terms may then keep a residue of a few ulps
    (see :func:`is_zero_at_zero`). ``provenance["offset_compensated"]`` holds the ``f(0)`` cancelled.
    """
    z = value_at_zero(eq)
    if z == 0.0:
        return eq
    if not math.isfinite(z):
        return None
    prov = {**eq.provenance, "offset_compensated": eq.provenance.get("offset_compensated", z)}
    grouped = _grouped(eq)
    if grouped is not None:
        grouped.provenance = prov
        z2 = value_at_zero(grouped)
        if z2 == 0.0:
            return grouped
        if math.isfinite(z2):
            eq, z = grouped, z2
    values: dict[sympy.Symbol, float] = dict(zip(eq.constant_symbols, eq.constants, strict=True))
    lone = [t for t in sympy.Add.make_args(eq.expr) if isinstance(t, sympy.Symbol) and t in values]
    if lone:
        s, expr = lone[0], eq.expr
    else:
        s = sympy.Symbol("_zero", real=True)
        expr, values[s] = eq.expr + s, 0.0
    best: tuple[float, Equation] | None = None
    for _ in range(tries):
        k = values[s] - z
        if k == values[s]:  # the residue is below the constant's ulp: step one ulp towards zero residue
            k = float(np.nextafter(k, -math.inf if z > 0 else math.inf))
        values[s] = k
        out = Equation(expr, values, metrics=eq.metrics, provenance=prov)
        z = value_at_zero(out)
        if not math.isfinite(z):
            return None
        if best is None or abs(z) < best[0]:
            best = (abs(z), out)
        if z == 0.0:
            break
    return best[1] if best is not None else None


def zero_tolerance(y: np.ndarray) -> float:
    """What :func:`is_zero_at_zero` accepts as zero for a rule fit to ``y``: ``1e-12`` of its RMS."""
    y = np.asarray(y, dtype=np.float64)
    return ZERO_RTOL * float(np.sqrt(np.mean(y**2))) if y.size else 0.0


def is_zero_at_zero(eq: Equation, tol: float = 0.0) -> bool:
    """``f(0) == 0``, or within ``tol`` (float64 rounding of a cancelled constant, :func:`zero_tolerance`)."""
    z = value_at_zero(eq)
    return z == 0.0 or abs(z) <= tol


def _pick(candidates: Sequence[Equation], max_complexity: int | None) -> Equation | None:
    """The form to refit: within ``max_complexity`` (counting a compensating constant as 2 nodes) if any
    is; then zero at zero whatever its constants (no compensation needed); then the smallest."""
    cap = math.inf if max_complexity is None else max_complexity
    ranked = []
    for i, c in enumerate(candidates):
        z = value_at_zero(c)
        if not math.isfinite(z):
            continue
        size = c.complexity + (0 if z == 0.0 else 2)
        ranked.append((size > cap, z != 0.0, size, i, c))
    return min(ranked, key=lambda r: r[:4])[4] if ranked else None


def remove_offset(
    eq: Equation,
    X: np.ndarray | Mapping[str, Any],
    y: np.ndarray,
    names: Sequence[str] | None = None,
    *,
    max_complexity: int | None = None,
    max_nfev: int = REFIT_MAX_NFEV,
) -> Equation | None:
    """``eq`` without any gradient-free term, its constants refit on (X, y); None if that is impossible.

    The steps: ``docs/symbolic.md``. An equation that is already zero at zero and has no
    constant term is returned unchanged (not refit). Otherwise the result's provenance holds
    ``offset_removed``: ``f(0)`` of the equation given (the drift it had, in the units of ``y``). The
    result carries no metrics: measure them on it.
    """
    folded = eq.fold_constants()
    z0 = value_at_zero(folded)
    if z0 == 0.0 and not offset_terms(folded):
        out = eq.copy()
        out.metrics = {}
        return out
    plain = drop_offset_terms(folded)
    dist = drop_offset_terms(_rebuild(folded, _distributed(folded.expr)).fold_constants())
    form = _pick([c for c in (dist, plain) if c is not None], max_complexity)
    if form is None:
        return None
    fitted = fit_constants(form, X, y, names, max_nfev=max_nfev, anchor_zero=True)
    out = zero_at_zero(fitted)
    if out is None:
        return None
    out = out.copy()
    out.metrics = {}
    out.provenance = {**eq.provenance, **out.provenance, "offset_removed": z0}
    return out
