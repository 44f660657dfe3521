"""The stateful symbolic step's eager fast paths (used by :mod:`harness.symbolic.optim.step`).

* :func:`cpu_tanh` / :func:`tanh_into`: ``tanh`` through numpy's SIMD kernel on CPU (:data:`EAGER_OPS`);
* :class:`LinearForm`: an equation that, once its rings hold ``h(feature)``, is a weighted sum of ring rows
  and lag-0 columns (eq. 6), stepped with no evaluator temporaries and no ring copies (:func:`into_form`).

Both compute what the generic in-place evaluator computes, in a different order (float rounding apart).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch
from torch import Tensor

from harness.symbolic.lang.lowering import closure
from harness.symbolic.lang.torch_ops import TORCH_OPS

__all__ = ["EAGER_OPS", "INTO", "LinearForm", "cpu_tanh", "into_form", "linear_form", "tanh_into"]

_NUMPY_DTYPES = (torch.float32, torch.float64)


def _numpy_ok(x: Any) -> bool:
    return (
        isinstance(x, Tensor) and x.device.type == "cpu" and x.dtype in _NUMPY_DTYPES and not x.requires_grad
    )


def tanh_into(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x)`` (``out`` may be ``x``): numpy's SIMD ``tanh`` for CPU float32/float64 tensors, else
    ``torch.tanh``.

    On CPU ``torch.tanh`` is SLEEF's 1-ulp vectorised tanh, measured here at about 6x the cost of numpy's (its
    AVX2 / AVX-512 kernels: within 1.5 ulp of the exact tanh in float32; libm's tanh where numpy has no SIMD
    kernel), numpy on one thread against torch on two; eq. 6's two ``tanh`` per coordinate were most of the
    eager step's time.
    """
    if _numpy_ok(x) and _numpy_ok(out):
        np.tanh(x.numpy(), out=out.numpy())
        return out
    return torch.tanh(x, out=out)


def cpu_tanh(x: Tensor) -> Tensor:
    """``tanh(x)`` as a new tensor, through :func:`tanh_into` on CPU."""
    if _numpy_ok(x):
        return tanh_into(x, torch.empty_like(x, memory_format=torch.contiguous_format))
    return torch.tanh(x)


#: the torch functions of the stateful step's eager evaluators (:data:`TORCH_OPS`, ``tanh`` :func:`cpu_tanh`)
EAGER_OPS: dict[Any, Callable[..., Any]] = {**TORCH_OPS, sympy.tanh: cpu_tanh}

#: ``F(x, out)`` for the unary functions :func:`into_form` writes straight into a ring row
INTO: dict[Any, Callable[[Tensor, Tensor], Tensor]] = {
    sympy.tanh: tanh_into,
    sympy.exp: lambda x, out: torch.exp(x, out=out),
    sympy.asinh: lambda x, out: torch.asinh(x, out=out),
    sympy.sinh: lambda x, out: torch.sinh(x, out=out),
    sympy.Abs: lambda x, out: torch.abs(x, out=out),
    sympy.sign: lambda x, out: torch.sign(x, out=out),
}


def _folder(
    const_index: Mapping[sympy.Symbol, int], consts: Sequence[Tensor]
) -> Callable[[sympy.Basic], float]:
    """A constant subtree's value as :func:`~harness.symbolic.lang.lowering.inplace_closure` folds it."""
    const_list = list(consts)
    return lambda e: float(closure(e, const_index, TORCH_OPS)(({}, const_list)))


def _args(e: sympy.Basic, kind: type) -> tuple[sympy.Basic, ...]:
    """``e``'s terms (``kind`` Add) or factors (``kind`` Mul)."""
    return e.args if isinstance(e, kind) else (e,)


def _split(
    term: sympy.Basic, variables: set[sympy.Symbol], fold: Callable[[sympy.Basic], float]
) -> tuple[float, sympy.Basic | None] | None:
    """``term`` as ``coefficient * rest`` with one variable factor ``rest`` (None: ``term`` is a constant), the
    coefficient the product of the constant factors' folded values (as
    :func:`~harness.symbolic.lang.lowering.inplace_closure` scales a term); None for several variable factors."""
    if not (term.free_symbols & variables):
        return fold(term), None
    coef = 1.0
    rest: list[sympy.Basic] = []
    for f in _args(term, sympy.Mul):
        if f.free_symbols & variables:
            rest.append(f)
        else:
            coef = coef * fold(f)
    return (coef, rest[0]) if len(rest) == 1 else None


@dataclass(frozen=True)
class LinearForm:
    """``const + sum(coef * env[name])``: an equation with no arithmetic but a weighted sum of its variables.

    Attributes:
        terms: ``(coefficient, variable name)``, each name once.
        const: the constant term.
    """

    terms: tuple[tuple[float, str], ...]
    const: float


def linear_form(
    expr: sympy.Basic, const_index: Mapping[sympy.Symbol, int], consts: Sequence[Tensor]
) -> LinearForm | None:
    """``expr`` as a :class:`LinearForm` (coefficients folded in ``consts``' dtype), or None when it is not a
    weighted sum of distinct variables."""
    variables = {s for s in expr.free_symbols if isinstance(s, sympy.Symbol) and s not in const_index}
    if not variables:
        return None
    fold = _folder(const_index, consts)
    terms: list[tuple[float, str]] = []
    const = 0.0
    for term in _args(expr, sympy.Add):
        split = _split(term, variables, fold)
        if split is None:
            return None
        coef, rest = split
        if rest is None:
            const = const + coef
        elif isinstance(rest, sympy.Symbol):
            terms.append((coef, rest.name))
        else:
            return None
    if len({name for _, name in terms}) != len(terms):
        return None
    return LinearForm(tuple(terms), const)


def into_form(
    rep: sympy.Basic, var: sympy.Symbol, const_index: Mapping[sympy.Symbol, int], consts: Sequence[Tensor]
) -> tuple[float, Callable[[Tensor, Tensor], Tensor]] | None:
    """A ring's ``h`` as ``(c, F)`` when it is ``F(c * var)`` with ``F`` in :data:`INTO` (written into a row as
    ``mul(x, c, out=row)``, then ``F(row, out=row)``); None otherwise."""
    fn = INTO.get(rep.func)
    if fn is None or len(rep.args) != 1:
        return None
    split = _split(rep.args[0], {var}, _folder(const_index, consts))
    return (split[0], fn) if split is not None and split[1] == var else None
