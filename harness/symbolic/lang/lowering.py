"""Lowering of an equation's sympy tree to numeric code: nested closures over numpy (float64 evaluation)
or torch (differentiable, for :class:`~harness.symbolic.lang.compiled.CompiledEquation`; the torch functions
are in :mod:`harness.symbolic.lang.torch_ops`, so evaluating or printing an equation never imports torch).

The tree is walked once; each node becomes a closure ``f((variables, constants)) -> value``, so evaluation
costs one Python call per node and no sympy at run time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import scipy.special
import sympy

from harness.symbolic.lang.functions import NUMERIC_ERRORS, relu, spow, ssqrt

__all__ = ["NP_OPS", "Closure", "Env", "Ops", "closure", "numpy_env"]


def _np_ssqrt(x: Any) -> Any:
    return np.sign(x) * np.sqrt(np.abs(x))


def _np_spow(x: Any, y: Any) -> Any:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x == 0, 0.0, np.sign(x) * np.power(np.abs(x), y))


def _np_pow(x: Any, y: Any) -> Any:
    return np.power(np.asarray(x, dtype=np.float64), y)


NP_OPS: dict[Any, Callable[..., Any]] = {  # keys: sympy function classes
    sympy.exp: np.exp,
    sympy.log: np.log,
    sympy.tanh: np.tanh,
    sympy.asinh: np.arcsinh,
    sympy.sinh: np.sinh,
    sympy.cos: np.cos,
    sympy.sin: np.sin,
    sympy.Abs: np.abs,
    sympy.sign: np.sign,
    sympy.erfc: scipy.special.erfc,
    ssqrt: _np_ssqrt,
    spow: _np_spow,
    relu: lambda x: np.maximum(x, 0.0),
    sympy.Pow: _np_pow,
}


Env = tuple[Mapping[str, Any], Sequence[Any]]
"""What a closure reads: (variables by name, constants by index); values are numpy arrays or tensors."""
Closure = Callable[[Env], Any]
"""A compiled (sub)expression: ``f((variables, constants)) -> value``."""
Ops = Mapping[Any, Callable[..., Any]]
"""sympy function class -> its numeric implementation (:data:`NP_OPS`, or ``torch_ops.TORCH_OPS``)."""


def closure(expr: sympy.Basic, const_index: Mapping[sympy.Symbol, int], ops: Ops) -> Closure:
    """Compile a sympy tree once into nested closures ``f((vars, consts)) -> value``.

    ``const_index`` maps each constant symbol to its index in ``consts``; every other symbol is a variable
    read from ``vars`` by name. Variable-free subtrees are folded to one float.
    """
    if isinstance(expr, sympy.Symbol):
        if expr in const_index:
            i = const_index[expr]
            return lambda env: env[1][i]
        name = expr.name
        return lambda env: env[0][name]
    if not expr.free_symbols:
        try:
            value = float(sympy.N(expr))
        except NUMERIC_ERRORS:
            value = float("nan")
        return lambda env: value
    children = [closure(a, const_index, ops) for a in expr.args]
    if isinstance(expr, sympy.Add):
        return lambda env: reduce(operator.add, (c(env) for c in children))
    if isinstance(expr, sympy.Mul):
        return lambda env: reduce(operator.mul, (c(env) for c in children))
    if isinstance(expr, sympy.Pow) and isinstance(expr.exp, sympy.Integer):
        n = int(expr.exp)
        base = children[0]
        if n == -1:
            return lambda env: 1.0 / base(env)
        return lambda env: base(env) ** n
    fn = ops.get(expr.func)
    if fn is None:
        raise NotImplementedError(f"no numeric implementation for {expr.func}")
    if len(children) == 1:
        (c0,) = children
        return lambda env: fn(c0(env))
    return lambda env: fn(*(c(env) for c in children))


def numpy_env(
    X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None, needed: Sequence[str]
) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
    """Float64 columns by name from a ``{name: array}`` dict or a 2-D array with column ``names``; also
    the shape of one column (None when there are none). Raises when a ``needed`` variable is missing."""
    if isinstance(X, Mapping):
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in X.items()}
    else:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D [N, F] (or a dict of columns), got shape {arr.shape}")
        if names is None or len(names) != arr.shape[1]:
            raise ValueError("a 2-D X needs `names`, one per column")
        cols = {n: arr[:, j] for j, n in enumerate(names)}
    missing = [v for v in needed if v not in cols]
    if missing:
        raise KeyError(f"inputs lack variables {missing}; given: {sorted(cols)[:20]}")
    shape = next(iter(cols.values())).shape if cols else None
    return cols, shape
