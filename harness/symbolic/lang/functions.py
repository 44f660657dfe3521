"""The functions of the equation grammar: sign-extended ``sqrt``/``pow`` and ``relu`` as sympy functions,
and the tables from grammar names to sympy (for the parser) and back (for the printer).

``sqrt`` and ``pow`` are SIGN-EXTENDED as in the paper: ``sqrt(x) = sign(x)*sqrt(|x|)``,
``pow(x, y) = sign(x)*|x|**y``; the others are sympy's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import sympy
from mpmath.libmp import prec_to_dps
from sympy.printing.printer import Printer

__all__ = ["FUNCTIONS", "NUMERIC_ERRORS", "PRINT_NAMES", "Fn", "GrammarFunction", "expr_args", "relu", "spow", "ssqrt"]


def expr_args(e: sympy.Basic) -> tuple[sympy.Expr, ...]:
    """``e.args`` typed as expressions (sympy types them as ``Basic``; in the grammar every argument is one)."""
    return cast("tuple[sympy.Expr, ...]", e.args)


NUMERIC_ERRORS = (TypeError, ValueError, AttributeError, ArithmeticError)
"""What sympy's ``evalf``/``float`` of a variable-free expression raises where it is not a real number."""


class GrammarFunction(sympy.Function):
    """Base of our sympy functions: fixes the type of ``f(x)`` (sympy annotates ``Function.__new__`` as
    returning a class, but applying a function class gives an expression), and evaluates numerically (so a
    structural ``sqrt(2)`` is a number to sympy, as ``exp(2)`` is) through :meth:`numeric`."""

    def __new__(cls, *args: Any, **options: Any) -> sympy.Expr:
        return cast(sympy.Expr, super().__new__(cls, *args, **options))

    def numeric(self, *args: sympy.Float) -> sympy.Expr:
        """The function's value at real numbers ``args`` (sympy Floats)."""
        raise NotImplementedError

    def _eval_evalf(self, prec: int) -> sympy.Expr | None:
        dps = prec_to_dps(prec)
        try:
            args = [sympy.N(a, dps) for a in self.args]
        except NUMERIC_ERRORS:  # sympy's evalf of an undefined argument (log(0)) can fail in several ways
            return None
        if not all(isinstance(a, sympy.Number) and a.is_finite for a in args):
            return None  # a symbol, or a non-real or undefined argument: no number
        out = sympy.N(self.numeric(*(sympy.Float(a, dps) for a in args)), dps)
        if out.is_zero:
            return sympy.Float(0, dps)  # N gives an exact zero, which evalf does not take as its result
        return out if isinstance(out, sympy.Float) else None


class ssqrt(GrammarFunction):  # noqa: N801 - sympy function names are lower case
    """Sign-extended square root ``sign(x)*sqrt(|x|)`` (the paper's ``sqrt``)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return 1 / (2 * sympy.sqrt(sympy.Abs(expr_args(self)[0])))

    def _eval_is_extended_real(self) -> bool | None:
        return expr_args(self)[0].is_extended_real

    def numeric(self, *args: sympy.Float) -> sympy.Expr:
        (x,) = args
        return sympy.sign(x) * sympy.sqrt(abs(x))

    def _latex(self, printer: Printer, exp: str | None = None) -> str:
        x = printer._print(self.args[0])
        return _power(rf"\operatorname{{sgn}}\left({x}\right)\sqrt{{\left|{x}\right|}}", exp)


class spow(GrammarFunction):  # noqa: N801
    """Sign-extended power ``sign(x)*|x|**y`` (the paper's ``pow``); ``spow(0, y) = 0``."""

    nargs = 2

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, y = expr_args(self)
        if argindex == 1:
            return y * sympy.Abs(x) ** (y - 1)
        return self * sympy.log(sympy.Abs(x))

    def _eval_is_extended_real(self) -> bool | None:
        x, y = expr_args(self)
        return True if (x.is_extended_real and y.is_extended_real) else None

    def numeric(self, *args: sympy.Float) -> sympy.Expr:
        x, y = args
        if x.is_zero:  # (sympy's Float(0) == 0 is False)
            return sympy.Float(0)  # spow(0, y) = 0 for every y, as the numpy and torch lowerings compute it
        return sympy.sign(x) * abs(x) ** y

    def _latex(self, printer: Printer, exp: str | None = None) -> str:
        x, y = (printer._print(a) for a in self.args)
        return _power(rf"\operatorname{{sgn}}\left({x}\right)\left|{x}\right|^{{{y}}}", exp)


class relu(GrammarFunction):  # noqa: N801
    """``max(x, 0)``."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.Heaviside(expr_args(self)[0])

    def _eval_is_extended_real(self) -> bool | None:
        return expr_args(self)[0].is_extended_real

    def numeric(self, *args: sympy.Float) -> sympy.Expr:
        (x,) = args
        return x if x > 0 else sympy.Float(0)

    def _latex(self, printer: Printer, exp: str | None = None) -> str:
        return _power(rf"\operatorname{{relu}}\left({printer._print(self.args[0])}\right)", exp)


def _power(tex: str, exp: str | None) -> str:
    """``tex`` raised to ``exp`` (sympy's LaTeX printer passes the exponent of ``f(x)**n`` to ``f``)."""
    return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"


@dataclass(frozen=True)
class Fn:
    """A grammar function: how many arguments it takes and how to build its sympy expression."""

    arity: int
    build: Callable[..., sympy.Expr]


def _square(x: sympy.Expr) -> sympy.Expr:
    return x**2


def _cube(x: sympy.Expr) -> sympy.Expr:
    return x**3


FUNCTIONS: dict[str, Fn] = {
    "sqrt": Fn(1, ssqrt),
    "ssqrt": Fn(1, ssqrt),
    "pow": Fn(2, spow),
    "spow": Fn(2, spow),
    "square": Fn(1, _square),
    "cube": Fn(1, _cube),
    "exp": Fn(1, sympy.exp),
    "log": Fn(1, sympy.log),
    "tanh": Fn(1, sympy.tanh),
    "asinh": Fn(1, sympy.asinh),
    "sinh": Fn(1, sympy.sinh),
    "cos": Fn(1, sympy.cos),
    "sin": Fn(1, sympy.sin),
    "abs": Fn(1, sympy.Abs),
    "sign": Fn(1, sympy.sign),
    "erfc": Fn(1, sympy.erfc),
    "relu": Fn(1, relu),
}
"""Function names the parser accepts (``ssqrt``/``spow`` are aliases) -> arity and sympy builder."""

PRINT_NAMES: dict[type[sympy.Basic], str] = {
    ssqrt: "sqrt",
    spow: "pow",
    sympy.exp: "exp",
    sympy.log: "log",
    sympy.tanh: "tanh",
    sympy.asinh: "asinh",
    sympy.sinh: "sinh",
    sympy.cos: "cos",
    sympy.sin: "sin",
    sympy.Abs: "abs",
    sympy.sign: "sign",
    sympy.erfc: "erfc",
    relu: "relu",
}
"""sympy function class -> the name printed in our grammar."""
