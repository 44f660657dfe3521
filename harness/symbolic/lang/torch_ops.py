"""The torch side of lowering: torch implementations of the grammar's functions (:data:`TORCH_OPS`, and
:data:`FUSED_TORCH_OPS` for compiled float32 kernels) and :func:`inplace_closure`, the optimizer step's
allocation-saving evaluator. Kept apart from :mod:`harness.symbolic.lang.lowering` so that parsing, printing
and numpy evaluation never import torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
import torch

from harness.symbolic.lang.functions import relu, spow, ssqrt
from harness.symbolic.lang.lowering import Ops, closure

__all__ = ["FUSED_TORCH_OPS", "TORCH_OPS", "InplaceFn", "as_tensor", "fused_tanh", "inplace_closure"]


def as_tensor(x: Any, like: Any) -> torch.Tensor:
    """``x`` as a tensor with ``like``'s dtype and device when ``like`` is a tensor."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.get_default_dtype())


def _t_ssqrt(x: torch.Tensor) -> torch.Tensor:
    # double-where: the gradient at x == 0 is 0 instead of NaN (the true derivative is infinite there)
    nz = x != 0
    safe = torch.where(nz, x, torch.ones_like(x))
    return torch.where(nz, torch.sign(safe) * torch.sqrt(torch.abs(safe)), torch.zeros_like(x))


def _t_spow(x: Any, y: Any) -> torch.Tensor:
    x = as_tensor(x, y)
    nz = x != 0
    safe = torch.where(nz, x, torch.ones_like(x))
    val = torch.sign(safe) * torch.pow(torch.abs(safe), y)
    return torch.where(nz, val, torch.zeros_like(val))


def _t_pow(x: Any, y: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return torch.pow(x, y)
    return torch.pow(float(x), y)


#: odd Taylor coefficients of tanh, x**3 .. x**17 (the series' error below |x| = 0.55 is under 1e-8 relative)
_TANH_SERIES = (
    -1 / 3,
    2 / 15,
    -17 / 315,
    62 / 2835,
    -1382 / 155925,
    21844 / 6081075,
    -929569 / 638512875,
    6404582 / 10854718875,
)


def fused_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` from ``exp`` and an odd polynomial, for float32 inside a compiled kernel.

    ``torch.compile`` on CPU turns ``torch.tanh`` into SLEEF's vectorised tanh, about twice the cost of this
    (``exp`` plus a degree-17 polynomial, both vectorised and fused into the surrounding loop). Accuracy in
    float32: within 1.5 ulp of the exact tanh everywhere (``torch.tanh``: 0.5 ulp): ``|x| < 0.55`` takes the
    series ``x + x**3 * P(x**2)``, above it ``sign(x) * (1 - 2 / (exp(2|x|) + 1))`` (no cancellation there:
    the result is above 0.5; ``exp`` overflowing to inf gives exactly 1). Not for float64 (the series is
    float32-accurate only).
    """
    a = x.abs()
    big = 1.0 - 2.0 / (torch.exp(2.0 * a) + 1.0)
    x2 = x * x
    c = _TANH_SERIES
    p = x2 * c[-1] + c[-2]
    for k in reversed(c[:-2]):
        p = p * x2 + k
    small = x + x * (x2 * p)
    return torch.where(a < 0.55, small, torch.copysign(big, x))


TORCH_OPS: dict[Any, Callable[..., Any]] = {
    sympy.exp: torch.exp,
    sympy.log: torch.log,
    sympy.tanh: torch.tanh,
    sympy.asinh: torch.asinh,
    sympy.sinh: torch.sinh,
    sympy.cos: torch.cos,
    sympy.sin: torch.sin,
    sympy.Abs: torch.abs,
    sympy.sign: torch.sign,
    sympy.erfc: torch.special.erfc,
    ssqrt: _t_ssqrt,
    spow: _t_spow,
    relu: torch.relu,
    sympy.Pow: _t_pow,
}

#: :data:`TORCH_OPS` for float32 kernels that ``torch.compile`` fuses: ``tanh`` is :func:`fused_tanh`
FUSED_TORCH_OPS: dict[Any, Callable[..., Any]] = {**TORCH_OPS, sympy.tanh: fused_tanh}

#: in-place tensor methods of the unary functions :func:`inplace_closure` may apply to its own temporaries
_INPLACE: dict[Any, str] = {
    sympy.exp: "exp_",
    sympy.log: "log_",
    sympy.tanh: "tanh_",
    sympy.asinh: "asinh_",
    sympy.sinh: "sinh_",
    sympy.cos: "cos_",
    sympy.sin: "sin_",
    sympy.Abs: "abs_",
    sympy.sign: "sign_",
    sympy.erfc: "erfc_",
    relu: "relu_",
}

InplaceFn = Callable[[Mapping[str, torch.Tensor]], tuple[Any, bool]]
"""An :func:`inplace_closure`: ``env -> (value, owned)``; ``owned`` says the value is a fresh tensor made by the
closure (the caller may write into it), else it is one of ``env``'s tensors or a float."""


def inplace_closure(
    expr: sympy.Basic,
    const_index: Mapping[sympy.Symbol, int],
    consts: Sequence[torch.Tensor],
    ops: Ops | None = None,
) -> InplaceFn:
    """Compile a sympy tree into a no-grad evaluator ``env -> (value, owned)`` over tensors of one dtype.

    ``const_index`` maps each constant symbol to its index in ``consts`` (0-dim tensors of the evaluation
    dtype); every other symbol is read from ``env`` by name. Subtrees without variables are folded once, here,
    to Python floats. At run time a sum is accumulated into one buffer, products ``mul_``/``div_`` into their
    first temporary, and functions run in place on the closure's own temporaries.

    ``env``'s tensors are never written. Values agree with :func:`closure`'s up to float rounding. ``ops``
    replaces :data:`TORCH_OPS` at run time (e.g. :data:`FUSED_TORCH_OPS` inside a compiled kernel; a function
    it replaces is applied out of place); constants are folded with :data:`TORCH_OPS`.
    """
    variables = {s for s in expr.free_symbols if isinstance(s, sympy.Symbol) and s not in const_index}
    run_ops = TORCH_OPS if ops is None else ops
    fold_fn = closure  # constant subtrees: evaluated like CompiledEquation does, once
    const_list = list(consts)

    def fold(e: sympy.Basic) -> float:
        value = fold_fn(e, const_index, TORCH_OPS)(({}, const_list))
        return float(value)

    def has_var(e: sympy.Basic) -> bool:
        return bool(e.free_symbols & variables)

    def scaled(e: sympy.Basic) -> tuple[float, InplaceFn | None]:
        """``e`` as ``coefficient * node`` (node None: ``e`` is the constant ``coefficient``)."""
        if not has_var(e):
            return fold(e), None
        if not isinstance(e, sympy.Mul):
            return 1.0, build(e)
        coef = 1.0
        num: list[InplaceFn] = []
        den: list[InplaceFn] = []
        for a in e.args:
            if not has_var(a):
                coef = coef * fold(a)
            elif isinstance(a, sympy.Pow) and a.exp == -1:
                den.append(build(a.args[0]))
            else:
                num.append(build(a))
        return coef, _product(num, den)

    def build(e: sympy.Basic) -> InplaceFn:
        if not has_var(e):
            value = fold(e)
            return lambda env: (value, False)
        if isinstance(e, sympy.Symbol):
            name = e.name
            return lambda env: (env[name], False)
        if isinstance(e, sympy.Add):
            const = 0.0
            terms: list[tuple[float, InplaceFn]] = []
            for a in e.args:
                coef, node = scaled(a)
                if node is None:
                    const = const + coef
                else:
                    terms.append((coef, node))
            return _sum(terms, const)
        if isinstance(e, sympy.Mul):
            coef, node = scaled(e)
            assert node is not None  # e has a variable
            return _scale(coef, node)
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer):
            return _int_pow(build(e.args[0]), int(e.exp))
        fn = run_ops.get(e.func)
        if fn is None:
            raise NotImplementedError(f"no numeric implementation for {e.func}")
        children = [build(a) for a in e.args]
        if len(children) == 1:
            (c0,) = children
            method = _INPLACE.get(e.func) if fn is TORCH_OPS.get(e.func) else None

            def unary(env: Mapping[str, torch.Tensor]) -> tuple[Any, bool]:
                v, own = c0(env)
                if own and method is not None:
                    return getattr(v, method)(), True
                return fn(v), True

            return unary
        return lambda env: (fn(*(c(env)[0] for c in children)), True)

    return build(expr)


def _product(num: list[InplaceFn], den: list[InplaceFn]) -> InplaceFn:
    """``prod(num) / prod(den)`` into the first temporary."""

    def run(env: Mapping[str, torch.Tensor]) -> tuple[Any, bool]:
        out: Any = None
        own = False
        for node in num:
            v, o = node(env)
            if out is None:
                out, own = v, o
            elif own:
                out.mul_(v)
            else:
                out, own = torch.mul(out, v), True
        for node in den:
            v, o = node(env)
            if out is None:
                out, own = (v.reciprocal_() if o else torch.reciprocal(v)), True
            elif own:
                out.div_(v)
            else:
                out, own = torch.div(out, v), True
        return out, own

    if len(num) == 1 and not den:
        return num[0]
    return run


def _scale(coef: float, node: InplaceFn) -> InplaceFn:
    if coef == 1.0:
        return node

    def run(env: Mapping[str, torch.Tensor]) -> tuple[Any, bool]:
        v, own = node(env)
        return (v.mul_(coef) if own else torch.mul(v, coef)), True

    return run


def _sum(terms: list[tuple[float, InplaceFn]], const: float) -> InplaceFn:
    """``const + sum(c * t)``: the first scaled term is the buffer, the rest ``add_(t, alpha=c)`` into it."""
    (c0, first), rest = terms[0], terms[1:]

    def run(env: Mapping[str, torch.Tensor]) -> tuple[Any, bool]:
        v, own = first(env)
        if own:
            out = v if c0 == 1.0 else v.mul_(c0)
        else:
            out = torch.mul(v, c0)
        for c, node in rest:
            out.add_(node(env)[0], alpha=c)
        if const != 0.0:
            out.add_(const)
        return out, True

    if not rest and const == 0.0:
        return _scale(c0, first)
    return run


def _int_pow(base: InplaceFn, n: int) -> InplaceFn:
    if n == 1:
        return base

    def run(env: Mapping[str, torch.Tensor]) -> tuple[Any, bool]:
        v, own = base(env)
        if n == -1:
            return (v.reciprocal_() if own else torch.reciprocal(v)), True
        if n == 2:
            return (v.mul_(v) if own else torch.mul(v, v)), True
        return (v.pow_(n) if own else torch.pow(v, n)), True

    return run
