"""Canonical printer: sympy back to the grammar's text, and the canonical form of an equation.

The printed text uses a deterministic order of terms that does not depend on constant names; constants
are printed as ``#`` placeholders and numbered in the order they appear, so that
``parse(str(eq)) == eq``. :func:`canonicalize` unties constants (one symbol per occurrence), turns Floats
into constants and renames them ``c0 .. cN`` in print order.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import sympy

from harness.symbolic.lang.functions import PRINT_NAMES, expr_args
from harness.symbolic.lang.names import const_symbol, is_variable_name, var_symbol

__all__ = ["ast_complexity", "canonicalize", "fill", "fmt_float"]

_ADD, _MUL, _UNARY, _POW, _ATOM = 1, 2, 3, 4, 5


@dataclass
class _Printed:
    text: str  # '#' marks a constant
    consts: list[sympy.Symbol]
    prec: int


class _Printer:
    """Prints with '#' for constants; ties between identical shapes are broken by constant rank."""

    def __init__(self, rank: Mapping[sympy.Symbol, tuple[int, int]]) -> None:
        self.values = rank  # the constant symbols (membership) and their ranks
        # each subexpression is printed once (a negated term is printed again as its negation: without the
        # memo, nesting doubles the work per level)
        self._memo: dict[sympy.Basic, _Printed] = {}

    def key(self, p: _Printed) -> tuple[str, tuple[tuple[int, int], ...]]:
        return p.text, tuple(self.values[c] for c in p.consts)

    def sorted(self, exprs: Iterable[sympy.Expr]) -> list[tuple[_Printed, sympy.Expr]]:
        items = [(self.pr(e), e) for e in exprs]
        items.sort(key=lambda it: self.key(it[0]))
        return items

    @staticmethod
    def wrap(p: _Printed, min_prec: int) -> _Printed:
        if p.prec >= min_prec:
            return p
        return _Printed(f"({p.text})", p.consts, _ATOM)

    def number(self, e: sympy.Basic) -> _Printed:
        if isinstance(e, sympy.Integer):
            v = int(e)
            return _Printed(str(v), [], _ATOM if v >= 0 else _UNARY)
        if isinstance(e, sympy.Rational):
            return _Printed(f"({int(e.p)}/{int(e.q)})", [], _ATOM)
        if e == sympy.E:
            return _Printed("exp(1)", [], _ATOM)
        raise ValueError(f"cannot print the number {e!r} in the equation grammar")

    def pr(self, e: sympy.Basic) -> _Printed:
        got = self._memo.get(e)
        if got is None:
            got = self._memo[e] = self._print(e)
        return got

    def _print(self, e: sympy.Basic) -> _Printed:
        if isinstance(e, sympy.Symbol):
            if e in self.values:
                return _Printed("#", [e], _UNARY)
            return _Printed(e.name, [], _ATOM)
        if e.is_Number or isinstance(e, sympy.NumberSymbol):
            return self.number(e)
        if isinstance(e, sympy.Add):
            return self.add(e)
        if isinstance(e, sympy.Mul):
            return self.mul(e)
        if isinstance(e, sympy.Pow):
            return self.pow(e)
        name = PRINT_NAMES.get(e.func)
        if name is None:
            raise ValueError(f"{e.func.__name__} is not in the equation grammar")
        args = [self.pr(a) for a in expr_args(e)]
        return _Printed(
            f"{name}({', '.join(a.text for a in args)})", [c for a in args for c in a.consts], _ATOM
        )

    @staticmethod
    def _negative(e: sympy.Expr) -> bool:
        if e.is_Number:
            return bool(e < 0)
        if not isinstance(e, sympy.Mul):
            return False
        first = expr_args(e)[0]
        return bool(first.is_Number and first < 0)

    def add(self, e: sympy.Add) -> _Printed:
        parts: list[str] = []
        consts: list[sympy.Symbol] = []
        items = self.sorted(expr_args(e))
        items.sort(key=lambda it: not it[1].free_symbols - set(self.values))  # constant terms last
        lead = next((i for i, (_, t) in enumerate(items) if not self._negative(t)), 0)
        items.insert(0, items.pop(lead))  # lead with a positive term: "g_0 - g_1", not "-g_1 + g_0"
        for i, (p, t) in enumerate(items):
            if i == 0:
                parts.append(p.text)
                consts += p.consts
            elif self._negative(t):
                q = self.wrap(self.pr(-t), _MUL)
                parts.append(f" - {q.text}")
                consts += q.consts
            else:
                parts.append(f" + {p.text}")
                consts += p.consts
        return _Printed("".join(parts), consts, _ADD)

    def mul(self, e: sympy.Mul) -> _Printed:
        coeff, factors = e.as_coeff_mul()
        num: list[sympy.Expr] = []
        den: list[sympy.Expr] = []
        for f in factors:
            if isinstance(f, sympy.Pow) and f.exp.is_Number and f.exp < 0:
                den.append(sympy.Pow(f.base, -f.exp))
            else:
                num.append(f)
        num_p = [self.wrap(p, _UNARY) for p, _ in self.sorted(num)]
        if coeff == -1 and num_p and num_p[0].text.startswith("#"):
            # "-0.5*x" would read back as the constant -0.5: put a non-constant factor first, or "-1*"
            k = next((i for i, p in enumerate(num_p) if not p.text.startswith("#")), None)
            if k is None:
                num_p.insert(0, self.number(sympy.Integer(-1)))
                coeff = sympy.Integer(1)
            else:
                num_p.insert(0, num_p.pop(k))
        if coeff not in (1, -1):
            num_p.insert(0, self.number(coeff))
        text = "*".join(p.text for p in num_p) if num_p else "1"
        consts = [c for p in num_p for c in p.consts]
        if den:
            den_p = [self.wrap(p, _UNARY) for p, _ in self.sorted(den)]
            if len(den_p) == 1:
                text += f"/{den_p[0].text}"
            else:
                text += "/(" + "*".join(p.text for p in den_p) + ")"
            consts += [c for p in den_p for c in p.consts]
        prec = _MUL
        if coeff == -1:
            text = f"-{text}"
            prec = _UNARY
        elif text.startswith("-"):
            prec = _UNARY
        return _Printed(text, consts, prec)

    def pow(self, e: sympy.Pow) -> _Printed:
        base, exp_ = expr_args(e)
        if exp_.is_Number and exp_ < 0:
            inner = self.wrap(self.pr(sympy.Pow(base, -exp_)), _UNARY)
            return _Printed(f"1/{inner.text}", inner.consts, _MUL)
        b = self.pr(base)
        if b.prec < _ATOM or b.text == "#":
            b = _Printed(f"({b.text})", b.consts, _ATOM)
        if isinstance(exp_, sympy.Integer):
            x = _Printed(str(int(exp_)), [], _ATOM)
        else:
            x = self.pr(exp_)
            if x.text != "#" and x.prec < _ATOM:
                x = _Printed(f"({x.text})", x.consts, _ATOM)
        return _Printed(f"{b.text}**{x.text}", b.consts + x.consts, _POW)


def fmt_float(v: float) -> str:
    """How a constant is written in equation text (``repr``: shortest round-tripping form)."""
    return repr(float(v))


def fill(text: str, fills: Sequence[str]) -> str:
    """Replace the ``#`` placeholders of printed text by ``fills``, in order."""
    pieces = text.split("#")
    assert len(pieces) == len(fills) + 1
    out = [pieces[0]]
    for f, p in zip(fills, pieces[1:], strict=True):
        out.append(f)
        out.append(p)
    return "".join(out)


def ast_complexity(node: ast.AST) -> int:
    """Node count of the grammar tree: leaves, operators and calls count 1 each; -<literal> is one leaf."""
    if isinstance(node, ast.Expression):
        return ast_complexity(node.body)
    if isinstance(node, (ast.Constant, ast.Name)):
        return 1
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.operand, ast.Constant):
            return 1
        return 1 + ast_complexity(node.operand)
    if isinstance(node, ast.BinOp):
        return 1 + ast_complexity(node.left) + ast_complexity(node.right)
    if isinstance(node, ast.Call):
        return 1 + sum(ast_complexity(a) for a in node.args)
    raise TypeError(type(node).__name__)


def replace_symbols(expr: sympy.Basic, mapping: Mapping[sympy.Symbol, sympy.Basic]) -> sympy.Basic:
    """``expr.xreplace(mapping)`` with function nodes rebuilt unevaluated, as the parser builds them:
    ``xreplace`` re-evaluates every function it rebuilds, and sympy's evaluation of ``tanh``/``exp`` of a
    large argument asks assumptions (real? finite?) whose cost grows much faster than the argument."""

    def go(e: sympy.Basic) -> sympy.Basic:
        if e in mapping:
            return mapping[e]  # type: ignore[index]
        if not e.args:
            return e
        args = [go(a) for a in e.args]
        if all(a is b for a, b in zip(args, e.args, strict=True)):
            return e
        return rebuild(e, args)

    return go(expr)


def rebuild(e: sympy.Basic, args: Sequence[sympy.Basic]) -> sympy.Basic:
    """``e.func(*args)``, a function node unevaluated (see :func:`replace_symbols` for why)."""
    if isinstance(e, sympy.Function):
        return cast(sympy.Basic, e.func(*args, evaluate=False))
    return e.func(*args)


def canonicalize(
    expr: sympy.Basic, values: Mapping[sympy.Symbol, float]
) -> tuple[sympy.Expr, tuple[float, ...], dict[sympy.Symbol, list[int]], str]:
    """Untie constants (one symbol per occurrence), turn Floats into constants, number them in print order.

    Returns the canonical expression over c0..cN, their values, a map from each input constant symbol to
    the indices of its occurrences, and the placeholder text.
    """
    temp_values: dict[sympy.Symbol, float] = {}
    origin: dict[sympy.Symbol, sympy.Symbol | None] = {}
    # rank = (position of the source constant in `values`, occurrence number): it breaks ties between
    # identical shapes, so re-canonicalising a canonical expression keeps every constant's index
    # (with_constants is index-stable) and parsing keeps literal order.
    source_rank = {sym: i for i, sym in enumerate(values)}
    seen: dict[sympy.Symbol | None, int] = {}
    rank: dict[sympy.Symbol, tuple[int, int]] = {}

    def fresh(v: float, src: sympy.Symbol | None) -> sympy.Symbol:
        if not math.isfinite(float(v)):
            raise ValueError(f"non-finite constant {v!r} in an equation")
        s = sympy.Symbol(f"_t{len(temp_values)}", real=True)
        temp_values[s] = float(v)
        origin[s] = src
        k = seen.get(src, 0)
        seen[src] = k + 1
        rank[s] = (source_rank[src], k) if src is not None else (len(source_rank) + k, 0)
        return s

    def rebuild(e: sympy.Basic) -> sympy.Basic:
        if isinstance(e, sympy.Symbol):
            if e in values:
                return fresh(values[e], e)
            if not is_variable_name(e.name):
                raise ValueError(f"symbol {e.name!r} is neither a constant nor a feature_lag variable")
            return e if e.is_real else var_symbol(e.name)
        if isinstance(e, sympy.Float):
            return fresh(float(e), None)
        if not e.args:
            return e
        if isinstance(e, sympy.Function):  # as the parser builds it: unevaluated (linear, see parser._call)
            return cast(sympy.Basic, e.func(*[rebuild(a) for a in e.args], evaluate=False))
        return e.func(*[rebuild(a) for a in e.args])

    tmp = rebuild(sympy.sympify(expr) if not isinstance(expr, sympy.Basic) else expr)
    printed = _Printer(rank).pr(tmp)
    order = printed.consts
    if len(set(order)) != len(order) or set(order) != set(temp_values):
        raise AssertionError("internal error: constants are not one symbol per occurrence")
    rename = {s: const_symbol(i) for i, s in enumerate(order)}
    occurrences: dict[sympy.Symbol, list[int]] = {}
    for i, s in enumerate(order):
        src = origin[s]
        if src is not None:
            occurrences.setdefault(src, []).append(i)
    canon = cast(sympy.Expr, replace_symbols(tmp, rename))
    return canon, tuple(temp_values[s] for s in order), occurrences, printed.text
