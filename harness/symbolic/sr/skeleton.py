"""Fit the constants of a given equation FORM by least squares; plus a fast linear baseline backend.

Backends: ``skeleton`` (``settings.extra["form"]``: ``"eq6"``, the paper's eq. 6 as :func:`tanh_sum_form`
with its ``gamma`` tied, or an expression text or an Equation; optional ``"tie_groups"``, ``"gamma"``,
``"max_nfev"``) and ``linear`` (least squares through the origin, as a front of nested models; ``extra``:
``prune_tol``). :func:`fit_constants` is re-exported from :mod:`harness.symbolic.sr.refit`. Both are zero at
zero by construction and keep to ``max_complexity`` (``docs/symbolic.md``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import sympy

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.names import var_symbol
from harness.symbolic.sr.base import SRSettings, check_fit_inputs, finish_front
from harness.symbolic.sr.offset import drop_offset_terms, offset_terms, value_at_zero, zero_at_zero
from harness.symbolic.sr.refit import fit_constants

__all__ = ["LinearBackend", "SkeletonBackend", "fit_constants", "tanh_sum_form", "tanh_sum_parameters"]


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
        dropped = [str(t) for t in offset_terms(form)] if not settings.allow_offset else []
        if dropped:
            form = self._without_offset(form, tie, dropped)
        max_nfev = int(settings.extra.get("max_nfev", max(50, settings.iterations)))
        fitted = fit_constants(
            form, X, y, names, tie_groups=tie, max_nfev=max_nfev, anchor_zero=not settings.allow_offset
        )
        if not settings.allow_offset and value_at_zero(fitted) != 0.0:
            fitted = self._cancel_offset(fitted, tie)
        if is_eq6 and tie:
            gam = [fitted.constants[i] for i in tie[0]]
            if gam and gam[0] < 0:  # W*gamma*tanh(x/gamma) is even in gamma: report gamma > 0
                fitted = fitted.with_constants(
                    [-v if i in tie[0] else v for i, v in enumerate(fitted.constants)]
                )
                fitted.provenance = {"form": "eq6", "tie_groups": [list(tie[0])]}
        if fitted.complexity > settings.max_complexity:
            raise ValueError(
                f"skeleton backend: the fitted form has complexity {fitted.complexity}, above "
                f"max_complexity {settings.max_complexity}; raise max_complexity (a distill stage's "
                f"max_complexities) to at least {fitted.complexity}, or fit a smaller form"
            )
        prov = {
            "backend": self.name,
            "seed": settings.seed,
            "form": form.template,
            "time_s": time.perf_counter() - t0,
        }
        if dropped:
            fitted.provenance["offset_terms_dropped"] = dropped
        return finish_front([fitted], X, y, names, prov, settings=settings, prune=False)

    @staticmethod
    def _without_offset(form: Equation, tie: object, dropped: list[str]) -> Equation:
        fix = "; set allow_offset: true to fit the form as given"
        if tie:
            raise ValueError(f"skeleton backend: the form has constant term(s) {dropped} and tie_groups{fix}")
        out = drop_offset_terms(form)
        if out is None:
            raise ValueError(f"skeleton backend: the form {form} has no term that reads an input{fix}")
        warnings.warn(
            f"skeleton backend: dropped the gradient-free term(s) {dropped} of the form (allow_offset is off)",
            stacklevel=3,
        )
        return out

    @staticmethod
    def _cancel_offset(fitted: Equation, tie: object) -> Equation:
        fix = "; set allow_offset: true to fit the form as given"
        out = zero_at_zero(fitted)
        if out is None:
            raise ValueError(
                f"skeleton backend: the form {fitted.template} is undefined at all-zero inputs{fix}"
            )
        if tie:
            raise ValueError(
                f"skeleton backend: the form {fitted.template} is not zero at zero inputs (a constant inside "
                f"a term) and has tie_groups, so no constant can be added to cancel it{fix}"
            )
        return out


class LinearBackend:
    """Ordinary least squares over all columns, as a front of nested models (most important first).

    Importance is ``|coef| * std(column)`` in the full fit; model k refits the k most important columns.
    No intercept unless ``settings.allow_offset``. Models above ``settings.max_complexity`` are left
    out. Fast, deterministic, a baseline for SR.
    """

    name = "linear"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: SRSettings) -> ParetoFront:
        X, y, names = check_fit_inputs(X, y, names)
        t0 = time.perf_counter()
        if "fit_intercept" in settings.extra:
            raise ValueError("linear backend: extra.fit_intercept is replaced by the allow_offset setting")
        intercept = settings.allow_offset
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
        return finish_front(equations, X, y, names, prov, settings=settings)
