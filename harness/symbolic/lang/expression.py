"""The :class:`Equation` class: a symbolic update rule over lagged features with its constants held apart.

An equation is a sympy expression over variables named ``{feature}_{lag}`` (``g_0``, ``m_hat_3``; lag 0 =
newest) and constant symbols ``c0 .. cN``. Every numeric constant OCCURRENCE is its own symbol with its
own value, so ``0.5*g_0 + 0.5*g_1`` has two constants and compiles to two trainable parameters (never
tied). Text goes through the safe parser (:mod:`harness.symbolic.lang.parser`, grammar in
:mod:`harness.symbolic.lang`), the canonical form through :mod:`harness.symbolic.lang.printer`; this module
holds the class, its derived equations, float64 evaluation, scoring and JSON.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import sympy

from harness.jsonio import loads_json, read_text, to_jsonable, write_json
from harness.symbolic.lang.functions import NUMERIC_ERRORS, expr_args
from harness.symbolic.lang.lowering import NP_OPS, Closure, closure, numpy_env
from harness.symbolic.lang.names import (
    EquationParseError,
    const_symbol,
    is_const_symbol,
    is_variable_name,
    split_variable,
    var_symbol,
)
from harness.symbolic.lang.parser import parse_to_sympy
from harness.symbolic.lang.printer import (
    ast_complexity,
    canonicalize,
    fill,
    fmt_float,
    rebuild,
    replace_symbols,
)
from harness.symbolic.metrics import mse, r2

if TYPE_CHECKING:
    import torch

    from harness.symbolic.lang.compiled import CompiledEquation

__all__ = ["Equation"]


class Equation:
    """A symbolic update rule: sympy expression over ``feature_lag`` variables and constants c0..cN.

    Build one with :meth:`parse` (text), :meth:`from_sympy`, :meth:`from_json` / :meth:`load`; equal
    equations have equal canonical text (``str(eq)``). ``metrics`` (fit scores such as ``r2_train``,
    ``r2_val``, ``mse_train``, ``loss``) and ``provenance`` (backend, seed, ...) ride along in JSON.
    """

    __slots__ = (
        "_expr",
        "_constants",
        "_text_ph",
        "_text",
        "metrics",
        "provenance",
        "_complexity",
        "_variables",
        "_np",
    )

    def __init__(
        self,
        expr: sympy.Basic,
        constants: Sequence[float] | Mapping[sympy.Symbol, float] = (),
        *,
        metrics: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(constants, Mapping):
            values = {k: float(v) for k, v in constants.items()}
        else:
            values = {const_symbol(i): float(v) for i, v in enumerate(constants)}
        canon, vals, _, text_ph = canonicalize(expr, values)
        self._set(canon, vals, text_ph, metrics, provenance)

    def _set(
        self,
        canon: sympy.Expr,
        vals: tuple[float, ...],
        text_ph: str,
        metrics: Mapping[str, float] | None,
        provenance: Mapping[str, Any] | None,
    ) -> None:
        self._expr = canon
        self._constants = vals
        self._text_ph = text_ph
        self._text = fill(text_ph, [fmt_float(v) for v in vals])
        self.metrics: dict[str, float] = {k: float(v) for k, v in (metrics or {}).items()}
        self.provenance: dict[str, Any] = dict(provenance or {})
        self._complexity: int | None = None
        self._variables: tuple[str, ...] | None = None
        self._np: Closure | None = None

    @classmethod
    def _with_occurrences(
        cls,
        expr: sympy.Expr,
        values: Mapping[sympy.Symbol, float],
        *,
        metrics: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> tuple[Equation, dict[sympy.Symbol, list[int]]]:
        """Build from an expression whose constant symbols may repeat; also return where each one went."""
        canon, vals, occ, text_ph = canonicalize(expr, values)
        eq = cls.__new__(cls)
        eq._set(canon, vals, text_ph, metrics, provenance)
        return eq, occ

    # -- constructors
    @classmethod
    def parse(
        cls,
        text: str,
        allowed_variables: Iterable[str] | None = None,
        *,
        name_map: Mapping[str, str] | None = None,
        caret_is_pow: bool = False,
        metrics: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> Equation:
        """Parse equation text safely (grammar: :mod:`harness.symbolic.lang`).

        Args:
            allowed_variables: if given, the only variable names accepted.
            name_map: raw names to variable names (e.g. PySR's ``x0`` -> ``g_0``), applied before checks.
            caret_is_pow: read ``^`` as power (Julia / PySR output) instead of refusing it.
        Raises:
            EquationParseError: for anything outside the grammar or over the caps.
        """
        expr, values = parse_to_sympy(text, allowed_variables, name_map=name_map, caret_is_pow=caret_is_pow)
        try:
            return cls(expr, values, metrics=metrics, provenance=provenance)
        except (ValueError, NotImplementedError) as exc:
            raise EquationParseError(str(exc)) from None

    @classmethod
    def from_sympy(
        cls,
        expr: sympy.Basic,
        *,
        name_map: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> Equation:
        """Wrap a sympy expression: every Float becomes a constant; Integers/Rationals stay structural.

        Symbols must be ``feature_lag`` names (after ``name_map``); functions must be in the grammar
        (``sympy.sqrt(x)`` is the plain power ``x**(1/2)``; use :class:`ssqrt` for the sign-extended one).
        """
        if name_map:
            rename = {
                s: var_symbol(name_map[s.name])
                for s in expr.free_symbols
                if isinstance(s, sympy.Symbol) and s.name in name_map
            }
            expr = cast(sympy.Expr, replace_symbols(expr, rename))
        return cls(expr, {}, metrics=metrics, provenance=provenance)

    # -- basic properties
    @property
    def expr(self) -> sympy.Expr:
        """The sympy expression over variable symbols and constant symbols ``c0..cN``."""
        return self._expr

    @property
    def constants(self) -> tuple[float, ...]:
        """Constant values, one per occurrence, in canonical (print) order."""
        return self._constants

    @property
    def constant_symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(const_symbol(i) for i in range(len(self._constants)))

    @property
    def n_constants(self) -> int:
        return len(self._constants)

    @property
    def text(self) -> str:
        """Canonical text in the safe grammar (constants inline, exactly as ``repr(float)``)."""
        return self._text

    @property
    def template(self) -> str:
        """Canonical text with constants written as ``c0, c1, ...``."""
        return fill(self._text_ph, [f"c{i}" for i in range(len(self._constants))])

    @property
    def complexity(self) -> int:
        """Node count of the canonical expression tree (leaves, operators, calls; ``-0.5`` is one leaf)."""
        if self._complexity is None:
            self._complexity = ast_complexity(ast.parse(self._text, mode="eval"))
        return self._complexity

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable names used, sorted by (feature, lag); the positional order of :meth:`compile`."""
        if self._variables is None:
            names = {
                s.name
                for s in self._expr.free_symbols
                if isinstance(s, sympy.Symbol) and not is_const_symbol(s)
            }
            self._variables = tuple(sorted(names, key=split_variable))
        return self._variables

    def features_used(self) -> list[str]:
        """Sorted feature names the equation reads."""
        return sorted({split_variable(v)[0] for v in self.variables})

    def lags_used(self) -> dict[str, list[int]]:
        """``{feature: sorted lags}`` for every feature used."""
        out: dict[str, list[int]] = {}
        for v in self.variables:
            f, lag = split_variable(v)
            out.setdefault(f, []).append(lag)
        return {f: sorted(lags) for f, lags in sorted(out.items())}

    def max_lag(self, feature: str) -> int:
        """Largest lag of ``feature`` used, -1 when unused (so ``max_lag + 1`` is the history needed)."""
        return max(self.lags_used().get(feature, [-1]))

    def __getstate__(self) -> dict[str, Any]:
        # cached closures do not pickle; everything else does (Ray ships equations between processes)
        return {
            "text": self._text,
            "constants": self._constants,
            "metrics": self.metrics,
            "provenance": self.provenance,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        eq = Equation.parse(state["text"]).with_constants(state["constants"])
        self._set(eq._expr, eq._constants, eq._text_ph, state["metrics"], state["provenance"])

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Equation({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Equation) and self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)

    def latex(self, digits: int = 4) -> str:
        """LaTeX with constants rounded to ``digits`` significant digits; variables as ``f_{t-k}``."""
        subs = {
            s: sympy.Float(float(f"{v:.{digits}g}"), digits)
            for s, v in zip(self.constant_symbols, self._constants, strict=True)
        }
        names = {}
        for v in self.variables:
            f, lag = split_variable(v)
            fname = f.replace("_", r"\_")
            names[var_symbol(v)] = rf"\mathit{{{fname}}}_{{t{'' if lag == 0 else f'-{lag}'}}}"
        try:
            return sympy.latex(replace_symbols(self._expr, subs), symbol_names=names)
        except NUMERIC_ERRORS:
            # a part that is undefined once the constants are numbers (1/log(cos(0.0))), which sympy's printer
            # evaluates to order terms: the constants are printed by name instead, as their values
            for s, v in subs.items():
                names[s] = sympy.latex(v) if v >= 0 else rf"\left({sympy.latex(v)}\right)"
            return sympy.latex(self._expr, symbol_names=names)

    # -- derived equations
    def with_constants(self, values: Sequence[float]) -> Equation:
        """Same form, new constant values (one per occurrence, canonical order)."""
        values = [float(v) for v in values]
        if len(values) != self.n_constants:
            raise ValueError(f"expected {self.n_constants} constants, got {len(values)}")
        return Equation(self._expr, values, metrics={}, provenance=self.provenance)

    def with_metrics(self, **metrics: float) -> Equation:
        """A copy with ``metrics`` updated."""
        eq = self.copy()
        eq.metrics.update({k: float(v) for k, v in metrics.items()})
        return eq

    def copy(self) -> Equation:
        """A copy with its own ``metrics`` and ``provenance`` dicts."""
        eq = Equation.__new__(Equation)
        eq._set(self._expr, self._constants, self._text_ph, self.metrics, self.provenance)
        return eq

    def fold_constants(self) -> Equation:
        """Collapse variable-free subtrees that hold constants into one constant each (same values).

        E.g. ``0.5*(2.0*g_0)`` -> ``1.0*g_0``, ``g_0 + 1.0 + 2.0`` -> ``g_0 + 3.0``. Changes the
        parametrisation (fewer constants), not the function.
        """
        values = dict(zip(self.constant_symbols, self._constants, strict=True))
        new_values: dict[sympy.Symbol, float] = {}

        def const_value(e: sympy.Basic) -> float:
            """The value of a variable-free subtree; NaN where it is not a finite real number."""
            try:
                v = float(sympy.N(replace_symbols(e, {s: sympy.Float(v, 17) for s, v in values.items()}), 17))
            except NUMERIC_ERRORS:
                return math.nan
            return v

        def new(v: float) -> sympy.Symbol:
            s = sympy.Symbol(f"_f{len(new_values)}", real=True)
            new_values[s] = v
            return s

        def has_var(e: sympy.Basic) -> bool:
            return any(not is_const_symbol(s) for s in e.free_symbols)

        def go(e: sympy.Expr) -> sympy.Expr:
            if isinstance(e, sympy.Symbol):
                return new(values[e]) if e in values else e
            if not e.free_symbols:
                return e
            if not has_var(e):
                value = const_value(e)
                if math.isfinite(value):
                    return new(value)
                # not a finite real number (log(0)): kept, its parts folded
                return cast(sympy.Expr, rebuild(e, [go(a) for a in expr_args(e)]))
            if isinstance(e, (sympy.Add, sympy.Mul)):
                fixed = [a for a in expr_args(e) if not has_var(a)]
                rest = [go(a) for a in expr_args(e) if has_var(a)]
                if not any(a.free_symbols for a in fixed):
                    rest.extend(fixed)
                elif math.isfinite(value := const_value(e.func(*fixed))):
                    rest.append(new(value))
                else:
                    rest.extend(go(a) for a in fixed)
                return e.func(*rest)
            return cast(sympy.Expr, rebuild(e, [go(a) for a in expr_args(e)]))

        return Equation(go(self._expr), new_values, metrics=self.metrics, provenance=self.provenance)

    # -- numeric evaluation
    def _np_fn(self) -> Closure:
        if self._np is None:
            idx = {s: i for i, s in enumerate(self.constant_symbols)}
            self._np = closure(self._expr, idx, NP_OPS)
        return self._np

    def evaluate(self, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Evaluate in float64 numpy on ``X`` (a ``{name: array}`` dict, or a 2-D array with column ``names``).

        Returns an array shaped like the inputs (``[N]`` for columns); NaN/inf pass through.
        """
        env, n = numpy_env(X, names, self.variables)
        consts = [np.float64(v) for v in self._constants]
        with np.errstate(all="ignore"):
            out = np.asarray(self._np_fn()((env, consts)), dtype=np.float64)
        if n is not None and out.shape != n:
            out = np.broadcast_to(out, n).copy()
        return out

    def score(
        self,
        X: Mapping[str, Any] | np.ndarray,
        y: np.ndarray,
        names: Sequence[str] | None = None,
        split: str = "train",
    ) -> Equation:
        """A copy with ``r2_{split}`` and ``mse_{split}`` measured in float64 on (X, y)."""
        yhat = self.evaluate(X, names)
        return self.with_metrics(**{f"r2_{split}": r2(y, yhat), f"mse_{split}": mse(y, yhat)})

    def compile(
        self, *, dtype: torch.dtype | None = None, tie_groups: Sequence[Sequence[int]] | None = None
    ) -> CompiledEquation[Equation]:
        """A torch module with one ``nn.Parameter`` per constant occurrence (or per ``tie_groups`` group)."""
        equation: Equation = self
        from harness.symbolic.lang.compiled import CompiledEquation  # torch: imported when first needed

        return CompiledEquation(equation, dtype=dtype, tie_groups=tie_groups)

    # -- JSON
    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``expression`` (safe grammar), ``template``, ``variables``, ``constants``, ..."""
        return {
            "format": "symbolic-l2o/equation",
            "version": 1,
            "expression": self._text,
            "template": self.template,
            "variables": [
                {"name": v, "feature": split_variable(v)[0], "lag": split_variable(v)[1]}
                for v in self.variables
            ],
            "constants": list(self._constants),
            "complexity": self.complexity,
            "metrics": to_jsonable(self.metrics),
            "provenance": to_jsonable(self.provenance),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Equation:
        """Inverse of :meth:`to_json` (a dict or a JSON string); the expression goes through the safe parser."""
        if isinstance(data, str):
            data = loads_json(data, "equation", EquationParseError)
        if not isinstance(data, Mapping) or not isinstance(data.get("expression"), str):
            raise EquationParseError("equation JSON needs a string field 'expression'")
        allowed = None
        if data.get("variables") is not None:
            if not isinstance(data["variables"], list):
                raise EquationParseError("equation JSON field 'variables' must be a list")
            allowed = set()
            for v in data["variables"]:
                name = v.get("name") if isinstance(v, Mapping) else v
                if not isinstance(name, str) or not is_variable_name(name):
                    raise EquationParseError(f"bad variable entry {str(v)[:80]} in equation JSON")
                if (
                    isinstance(v, Mapping)
                    and "feature" in v
                    and (v["feature"], v.get("lag")) != split_variable(name)
                ):
                    raise EquationParseError(f"variable {name!r} disagrees with its feature/lag fields")
                allowed.add(name)
        metrics = _json_metrics(data.get("metrics"))
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise EquationParseError("equation JSON field 'provenance' must be a mapping")
        eq = cls.parse(data["expression"], allowed, metrics=metrics, provenance=provenance)
        consts = data.get("constants")
        if consts is not None:
            if not isinstance(consts, list) or not all(
                type(c) in (int, float) and math.isfinite(c) for c in consts
            ):
                raise EquationParseError("equation JSON field 'constants' must be a list of finite numbers")
            if len(consts) != eq.n_constants:
                raise EquationParseError(
                    f"equation JSON has {len(consts)} constants but its expression has {eq.n_constants}"
                )
            eq = eq.with_constants(consts).with_metrics(**metrics)
            eq.provenance = dict(provenance)
        return eq

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (JSON)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Equation:
        """Read an equation JSON file written by :meth:`save` (at most ``MAX_JSON_BYTES``)."""
        return cls.from_json(read_text(path, "equation", EquationParseError))


def _json_metrics(raw: Any) -> dict[str, float]:
    """An equation JSON's ``metrics``: a mapping of names to numbers (null is NaN)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise EquationParseError(f"equation JSON field 'metrics' must be a mapping, not {type(raw).__name__}")
    out: dict[str, float] = {}
    for k, v in raw.items():
        if v is not None and type(v) not in (int, float):
            raise EquationParseError(
                f"equation JSON metric {str(k)[:40]!r} must be a number, got {str(v)[:40]}"
            )
        try:
            out[str(k)] = float("nan") if v is None else float(v)
        except OverflowError:  # a 400-digit integer
            raise EquationParseError(f"equation JSON metric {str(k)[:40]!r} is too large a number") from None
    return out
