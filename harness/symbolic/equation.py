"""Equations over lagged features: a safe parser, one canonical text form, numpy and torch evaluation.

An :class:`Equation` is a sympy expression over variables named ``{feature}_{lag}`` (``g_0``, ``m_hat_3``;
the feature may contain underscores, the lag is the part after the LAST underscore, lag 0 = newest) and
constant symbols ``c0 .. cN``. Every numeric constant OCCURRENCE is its own symbol with its own value, so
``0.5*g_0 + 0.5*g_1`` has two constants and compiles to two trainable parameters (never tied).

Grammar of the text form (what :meth:`Equation.parse` accepts and ``str(eq)`` prints), a subset of Python
expressions checked node by node on the ``ast`` and turned into sympy objects directly (nothing is ever
``eval``-ed, ``sympify``-ed or ``parse_expr``-ed):

* variables ``feature_lag``; float literals (``0.5``, ``1e-05``, ``-2.0``) are trainable constants;
  integer literals (``2``, ``(1/3)``) are fixed structural numbers (exponents, small coefficients);
* ``+ - * / **`` and unary ``- +``; ``**`` is the plain power (NaN for a negative base and a fractional
  exponent, like numpy);
* functions: ``sqrt`` and ``pow`` are SIGN-EXTENDED as in the paper: ``sqrt(x) = sign(x)*sqrt(|x|)``,
  ``pow(x, y) = sign(x)*|x|**y`` (``ssqrt``/``spow`` are accepted aliases); ``square cube exp log tanh
  asinh sinh cos sin abs sign erfc relu`` are the usual ones (``log`` is the plain log, NaN below 0).

Caps: text length, AST node count and depth, and the size of constant exponents / structural integers,
so hostile input (``9**9**9``, deep nesting, attribute access, calls to unknown functions) is refused with
:class:`EquationParseError` before anything expensive happens.

Canonical form: constants are numbered in the order they appear in the canonical text, which is printed
with a deterministic order of terms that does not depend on constant names; so ``parse(str(eq)) == eq``.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import scipy.special
import sympy
import torch
from torch import nn

from harness.symbolic.metrics import mse, r2

__all__ = [
    "MAX_AST_DEPTH",
    "MAX_AST_NODES",
    "MAX_EXPONENT",
    "MAX_TEXT_LENGTH",
    "OPERATOR_NAMES",
    "CompiledEquation",
    "Equation",
    "EquationParseError",
    "ParetoFront",
    "import_hall_of_fame",
    "is_variable_name",
    "normalize_operators",
    "relu",
    "split_variable",
    "spow",
    "ssqrt",
]

# ----------------------------------------------------------------------------------------------------
# limits and names

MAX_TEXT_LENGTH = 20_000
"""Longest equation text accepted (characters)."""
MAX_AST_NODES = 20_000
"""Most Python AST nodes (operators and contexts included) an equation text may have."""
MAX_AST_DEPTH = 100
"""Deepest AST nesting accepted."""
MAX_EXPONENT = 100.0
"""Largest magnitude of a literal (constant or structural) exponent."""
_MAX_INT_LITERAL = 10**18
_MAX_STRUCTURAL_BITS = 4000

_VARIABLE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)_(0|[1-9][0-9]*)$")
_CONST_RE = re.compile(r"^c(0|[1-9][0-9]*)$")

OPERATOR_NAMES: tuple[str, ...] = (
    "add",
    "sub",
    "mul",
    "div",
    "square",
    "cube",
    "sqrt",
    "pow",
    "exp",
    "log",
    "tanh",
    "asinh",
    "sinh",
    "relu",
    "erfc",
    "abs",
    "sign",
    "cos",
    "sin",
)
"""Operator names SR settings may use (``sqrt`` and ``pow`` sign-extended, as in the paper)."""
_OPERATOR_ALIASES = {"+": "add", "-": "sub", "*": "mul", "/": "div", "ssqrt": "sqrt", "spow": "pow"}


class EquationParseError(ValueError):
    """An equation text (or JSON) that is malformed, unsafe, or uses unknown names."""


def is_variable_name(name: str) -> bool:
    """True for ``feature_lag`` names (no dunder, lag a non-negative int without leading zeros)."""
    return bool(_VARIABLE_RE.match(name)) and "__" not in name


def split_variable(name: str) -> tuple[str, int]:
    """``"m_hat_3" -> ("m_hat", 3)``: split on the last underscore; raises ValueError for other names."""
    m = _VARIABLE_RE.match(name)
    if not m or "__" in name:
        raise ValueError(f"{name!r} is not a variable name of the form feature_lag (e.g. g_0, m_hat_3)")
    return m.group(1), int(m.group(2))


def normalize_operators(operators: Iterable[str]) -> list[str]:
    """Map operator names and aliases (``+``, ``ssqrt``) to :data:`OPERATOR_NAMES`; unknown ones raise."""
    out: list[str] = []
    for raw in operators:
        name = _OPERATOR_ALIASES.get(str(raw).strip(), str(raw).strip())
        if name not in OPERATOR_NAMES:
            raise ValueError(f"unknown operator {raw!r}; known operators: {', '.join(OPERATOR_NAMES)}")
        if name not in out:
            out.append(name)
    return out


# ----------------------------------------------------------------------------------------------------
# sympy functions with sign-extended semantics


class ssqrt(sympy.Function):  # noqa: N801 - sympy function names are lower case
    """Sign-extended square root ``sign(x)*sqrt(|x|)`` (the paper's ``sqrt``)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return 1 / (2 * sympy.sqrt(sympy.Abs(self.args[0])))

    def _eval_is_extended_real(self) -> bool | None:
        return self.args[0].is_extended_real

    def _latex(self, printer: Any) -> str:
        x = printer._print(self.args[0])
        return rf"\operatorname{{sgn}}\left({x}\right)\sqrt{{\left|{x}\right|}}"


class spow(sympy.Function):  # noqa: N801
    """Sign-extended power ``sign(x)*|x|**y`` (the paper's ``pow``); ``spow(0, y) = 0``."""

    nargs = 2

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, y = self.args
        if argindex == 1:
            return y * sympy.Abs(x) ** (y - 1)
        return self * sympy.log(sympy.Abs(x))

    def _eval_is_extended_real(self) -> bool | None:
        x, y = self.args
        return True if (x.is_extended_real and y.is_extended_real) else None

    def _latex(self, printer: Any) -> str:
        x, y = (printer._print(a) for a in self.args)
        return rf"\operatorname{{sgn}}\left({x}\right)\left|{x}\right|^{{{y}}}"


class relu(sympy.Function):  # noqa: N801
    """``max(x, 0)``."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.Heaviside(self.args[0])

    def _eval_is_extended_real(self) -> bool | None:
        return self.args[0].is_extended_real

    def _latex(self, printer: Any) -> str:
        return rf"\operatorname{{relu}}\left({printer._print(self.args[0])}\right)"


@dataclass(frozen=True)
class _Fn:
    arity: int
    build: Callable[..., sympy.Expr]


_FUNCTIONS: dict[str, _Fn] = {
    "sqrt": _Fn(1, ssqrt),
    "ssqrt": _Fn(1, ssqrt),
    "pow": _Fn(2, spow),
    "spow": _Fn(2, spow),
    "square": _Fn(1, lambda x: x**2),
    "cube": _Fn(1, lambda x: x**3),
    "exp": _Fn(1, sympy.exp),
    "log": _Fn(1, sympy.log),
    "tanh": _Fn(1, sympy.tanh),
    "asinh": _Fn(1, sympy.asinh),
    "sinh": _Fn(1, sympy.sinh),
    "cos": _Fn(1, sympy.cos),
    "sin": _Fn(1, sympy.sin),
    "abs": _Fn(1, sympy.Abs),
    "sign": _Fn(1, sympy.sign),
    "erfc": _Fn(1, sympy.erfc),
    "relu": _Fn(1, relu),
}

# sympy function class -> name printed in our grammar
_PRINT_NAMES: dict[Any, str] = {
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


def _var_symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, real=True)


def _const_symbol(i: int) -> sympy.Symbol:
    return sympy.Symbol(f"c{i}", real=True)


def _is_const_symbol(s: Any) -> bool:
    return isinstance(s, sympy.Symbol) and bool(_CONST_RE.match(s.name))


# ----------------------------------------------------------------------------------------------------
# safe parser: ast -> sympy


class _Builder:
    """Turns a checked Python AST into sympy, collecting one fresh symbol per float literal."""

    def __init__(
        self,
        allowed: frozenset[str] | None,
        name_map: Mapping[str, str] | None,
        caret_is_pow: bool,
    ) -> None:
        self.allowed = allowed
        self.name_map = dict(name_map or {})
        self.caret_is_pow = caret_is_pow
        self.values: dict[sympy.Symbol, float] = {}

    # -- helpers
    def _const(self, value: float) -> sympy.Symbol:
        if not math.isfinite(value):
            raise EquationParseError(f"non-finite constant {value!r}")
        sym = sympy.Symbol(f"_k{len(self.values)}", real=True)
        self.values[sym] = float(value)
        return sym

    @staticmethod
    def _float_literal(node: ast.AST) -> float | None:
        """Value of a float literal, possibly under unary +/- signs; None otherwise."""
        sign = 1.0
        while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            if isinstance(node.op, ast.USub):
                sign = -sign
            node = node.operand
        if isinstance(node, ast.Constant) and type(node.value) is float:
            return sign * node.value
        return None

    @classmethod
    def _int_only(cls, node: ast.AST) -> bool:
        """True when a subtree is made only of integer literals and + - * / ** (a structural number)."""
        if isinstance(node, ast.Constant):
            return type(node.value) is int
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return cls._int_only(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(
            node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
        ):
            return cls._int_only(node.left) and cls._int_only(node.right)
        return False

    @staticmethod
    def _check_number(e: sympy.Expr) -> sympy.Expr:
        """Refuse structural numbers that are huge, infinite or not real."""
        if e.free_symbols:
            return e
        if e.has(sympy.zoo, sympy.nan, sympy.oo, sympy.S.NegativeInfinity, sympy.I):
            raise EquationParseError(f"the expression evaluates to an undefined value ({e})")
        if isinstance(e, sympy.Rational):
            if max(abs(int(e.p)).bit_length(), abs(int(e.q)).bit_length()) > _MAX_STRUCTURAL_BITS:
                raise EquationParseError("a structural number in the expression is too large")
            return e
        if e.is_extended_real is False:
            raise EquationParseError(f"the expression has a non-real number ({e})")
        try:
            v = float(sympy.N(e))
        except (TypeError, ValueError) as exc:
            raise EquationParseError(f"the expression has a non-real number ({e})") from exc
        if not math.isfinite(v):
            raise EquationParseError(f"the expression has a non-finite number ({e})")
        return e

    def _check_exponent(self, base: sympy.Expr, exponent: sympy.Expr | float) -> None:
        value = float(exponent)
        if abs(value) > MAX_EXPONENT:
            raise EquationParseError(f"exponent {value:g} is too large (|exponent| <= {MAX_EXPONENT:g})")
        if isinstance(base, sympy.Rational) and isinstance(exponent, sympy.Rational):
            bits = max(abs(int(base.p)).bit_length(), abs(int(base.q)).bit_length())
            if bits * abs(value) > _MAX_STRUCTURAL_BITS:
                raise EquationParseError("a structural power in the expression is too large")

    # -- main dispatch
    def build(self, node: ast.AST) -> sympy.Expr:
        lit = self._float_literal(node)
        if lit is not None:
            return self._const(lit)
        if isinstance(node, ast.Constant):
            v = node.value
            if type(v) is int:
                if abs(v) > _MAX_INT_LITERAL:
                    raise EquationParseError(f"integer literal too large: {v}")
                return sympy.Integer(v)
            raise EquationParseError(f"literal {v!r} of type {type(v).__name__} is not allowed")
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return self._check_number(-self.build(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand)
            raise EquationParseError(f"unary operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise EquationParseError(f"{type(node).__name__} is not allowed in an equation")

    def _name(self, raw: str) -> sympy.Symbol:
        name = self.name_map.get(raw, raw)
        if not is_variable_name(name):
            hint = " (a function name must be called)" if name in _FUNCTIONS else ""
            raise EquationParseError(f"unknown name {raw!r}{hint}; variables look like feature_lag, e.g. g_0")
        if self.allowed is not None and name not in self.allowed:
            known = ", ".join(sorted(self.allowed)[:20]) + (" ..." if len(self.allowed) > 20 else "")
            raise EquationParseError(f"unknown variable {name!r}; allowed: {known}")
        return _var_symbol(name)

    def _binop(self, node: ast.BinOp) -> sympy.Expr:
        op = node.op
        if isinstance(op, ast.BitXor) and self.caret_is_pow:
            op = ast.Pow()
        if isinstance(op, ast.Pow):
            base = self.build(node.left)
            if self._int_only(node.right):
                exponent = self.build(node.right)
                self._check_exponent(base, exponent)
            else:
                lit = self._float_literal(node.right)
                if lit is not None:
                    self._check_exponent(base, lit)
                exponent = self.build(node.right)
            return self._check_number(sympy.Pow(base, exponent))
        left, right = self.build(node.left), self.build(node.right)
        if isinstance(op, ast.Add):
            out = left + right
        elif isinstance(op, ast.Sub):
            out = left - right
        elif isinstance(op, ast.Mult):
            out = left * right
        elif isinstance(op, ast.Div):
            if right == 0:
                raise EquationParseError("division by the structural number 0")
            out = left / right
        else:
            raise EquationParseError(f"binary operator {type(op).__name__} is not allowed")
        return self._check_number(out)

    def _call(self, node: ast.Call) -> sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise EquationParseError(
                f"only calls of known functions are allowed, not {type(node.func).__name__}"
            )
        name = node.func.id
        fn = _FUNCTIONS.get(name)
        if fn is None:
            raise EquationParseError(f"unknown function {name!r}; known: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise EquationParseError(f"keyword arguments are not allowed ({name})")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise EquationParseError(f"starred arguments are not allowed ({name})")
        if len(node.args) != fn.arity:
            raise EquationParseError(f"{name} takes {fn.arity} argument(s), got {len(node.args)}")
        if fn.build is spow:
            lit = self._float_literal(node.args[1])
            if lit is not None and abs(lit) > MAX_EXPONENT:
                raise EquationParseError(f"exponent {lit:g} is too large (|exponent| <= {MAX_EXPONENT:g})")
            if self._int_only(node.args[1]):
                self._check_exponent(sympy.Integer(0), self.build(node.args[1]))
        args = [self.build(a) for a in node.args]
        return self._check_number(fn.build(*args))


def _check_ast_size(tree: ast.AST) -> None:
    """Refuse ASTs that are too big or too deep, iteratively (no recursion on hostile input)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_AST_NODES:
            raise EquationParseError(f"equation too large (more than {MAX_AST_NODES} syntax nodes)")
        if depth > MAX_AST_DEPTH:
            raise EquationParseError(f"equation nested too deeply (depth > {MAX_AST_DEPTH})")
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1))


def _parse_to_sympy(
    text: str,
    allowed_variables: Iterable[str] | None = None,
    *,
    name_map: Mapping[str, str] | None = None,
    caret_is_pow: bool = False,
) -> tuple[sympy.Expr, dict[sympy.Symbol, float]]:
    if not isinstance(text, str):
        raise EquationParseError(f"an equation must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_LENGTH:
        raise EquationParseError(f"equation text too long ({len(text)} > {MAX_TEXT_LENGTH} characters)")
    if not text.strip():
        raise EquationParseError("empty equation")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise EquationParseError(f"cannot parse equation: {type(exc).__name__}: {exc}") from None
    _check_ast_size(tree)
    allowed = frozenset(allowed_variables) if allowed_variables is not None else None
    builder = _Builder(allowed, name_map, caret_is_pow)
    try:
        expr = builder.build(tree.body)
    except RecursionError:
        raise EquationParseError("equation nested too deeply") from None
    return expr, builder.values


# ----------------------------------------------------------------------------------------------------
# canonical printer: sympy -> our grammar, with '#' placeholders for constants

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

    def number(self, e: sympy.Expr) -> _Printed:
        if isinstance(e, sympy.Integer):
            v = int(e)
            return _Printed(str(v), [], _ATOM if v >= 0 else _UNARY)
        if isinstance(e, sympy.Rational):
            return _Printed(f"({int(e.p)}/{int(e.q)})", [], _ATOM)
        if e == sympy.E:
            return _Printed("exp(1)", [], _ATOM)
        raise ValueError(f"cannot print the number {e!r} in the equation grammar")

    def pr(self, e: sympy.Expr) -> _Printed:
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
        name = _PRINT_NAMES.get(e.func)
        if name is None:
            raise ValueError(f"{e.func.__name__} is not in the equation grammar")
        args = [self.pr(a) for a in e.args]
        return _Printed(
            f"{name}({', '.join(a.text for a in args)})", [c for a in args for c in a.consts], _ATOM
        )

    @staticmethod
    def _negative(e: sympy.Expr) -> bool:
        if e.is_Number:
            return bool(e < 0)
        return isinstance(e, sympy.Mul) and e.args[0].is_Number and bool(e.args[0] < 0)

    def add(self, e: sympy.Expr) -> _Printed:
        parts: list[str] = []
        consts: list[sympy.Symbol] = []
        items = self.sorted(e.args)
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

    def mul(self, e: sympy.Expr) -> _Printed:
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

    def pow(self, e: sympy.Expr) -> _Printed:
        base, exp_ = e.args
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


def _fmt_float(v: float) -> str:
    return repr(float(v))


def _fill(text: str, fills: Sequence[str]) -> str:
    pieces = text.split("#")
    assert len(pieces) == len(fills) + 1
    out = [pieces[0]]
    for f, p in zip(fills, pieces[1:], strict=True):
        out.append(f)
        out.append(p)
    return "".join(out)


def _ast_complexity(node: ast.AST) -> int:
    """Node count of the grammar tree: leaves, operators and calls count 1 each; -<literal> is one leaf."""
    if isinstance(node, ast.Expression):
        return _ast_complexity(node.body)
    if isinstance(node, (ast.Constant, ast.Name)):
        return 1
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.operand, ast.Constant):
            return 1
        return 1 + _ast_complexity(node.operand)
    if isinstance(node, ast.BinOp):
        return 1 + _ast_complexity(node.left) + _ast_complexity(node.right)
    if isinstance(node, ast.Call):
        return 1 + sum(_ast_complexity(a) for a in node.args)
    raise TypeError(type(node).__name__)


# ----------------------------------------------------------------------------------------------------
# numeric evaluation: sympy tree -> closures over numpy or torch


def _np_ssqrt(x: Any) -> Any:
    return np.sign(x) * np.sqrt(np.abs(x))


def _np_spow(x: Any, y: Any) -> Any:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x == 0, 0.0, np.sign(x) * np.power(np.abs(x), y))


def _np_pow(x: Any, y: Any) -> Any:
    return np.power(np.asarray(x, dtype=np.float64), y)


_NP_OPS: dict[Any, Callable[..., Any]] = {
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


def _as_tensor(x: Any, like: Any) -> torch.Tensor:
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
    x = _as_tensor(x, y)
    nz = x != 0
    safe = torch.where(nz, x, torch.ones_like(x))
    val = torch.sign(safe) * torch.pow(torch.abs(safe), y)
    return torch.where(nz, val, torch.zeros_like(val))


def _t_pow(x: Any, y: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return torch.pow(x, y)
    return torch.pow(float(x), y)


_TORCH_OPS: dict[Any, Callable[..., Any]] = {
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

_Env = tuple[Mapping[str, Any], Sequence[Any]]  # (variables by name, constants by index)


def _closure(
    expr: sympy.Expr, const_index: Mapping[sympy.Symbol, int], ops: Mapping[Any, Callable]
) -> Callable:
    """Compile a sympy tree once into nested closures ``f((vars, consts)) -> value``."""
    if isinstance(expr, sympy.Symbol):
        if expr in const_index:
            i = const_index[expr]
            return lambda env: env[1][i]
        name = expr.name
        return lambda env: env[0][name]
    if not expr.free_symbols:
        try:
            value = float(sympy.N(expr))
        except (TypeError, ValueError):
            value = float("nan")
        return lambda env: value
    children = [_closure(a, const_index, ops) for a in expr.args]
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


# ----------------------------------------------------------------------------------------------------
# Equation


def _canonicalize(
    expr: sympy.Expr, values: Mapping[sympy.Symbol, float]
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

    def rebuild(e: sympy.Expr) -> sympy.Expr:
        if isinstance(e, sympy.Symbol):
            if e in values:
                return fresh(values[e], e)
            if not is_variable_name(e.name):
                raise ValueError(f"symbol {e.name!r} is neither a constant nor a feature_lag variable")
            return e if e.is_real else _var_symbol(e.name)
        if isinstance(e, sympy.Float):
            return fresh(float(e), None)
        if not e.args:
            return e
        return e.func(*[rebuild(a) for a in e.args])

    tmp = rebuild(sympy.sympify(expr) if not isinstance(expr, sympy.Basic) else expr)
    printed = _Printer(rank).pr(tmp)
    order = printed.consts
    if len(set(order)) != len(order) or set(order) != set(temp_values):
        raise AssertionError("internal error: constants are not one symbol per occurrence")
    rename = {s: _const_symbol(i) for i, s in enumerate(order)}
    occurrences: dict[sympy.Symbol, list[int]] = {}
    for i, s in enumerate(order):
        src = origin[s]
        if src is not None:
            occurrences.setdefault(src, []).append(i)
    canon = tmp.xreplace(rename)
    return canon, tuple(temp_values[s] for s in order), occurrences, printed.text


class Equation:
    """A symbolic update rule: sympy expression over ``feature_lag`` variables and constants c0..cN.

    Build one with :meth:`parse` (text), :meth:`from_sympy`, :meth:`from_json` / :meth:`load`; equal
    equations have equal canonical text (``str(eq)``). ``metrics`` (fit scores such as ``r2_train``,
    ``r2_val``, ``mse_train``, ``loss``) and ``provenance`` (backend, seed, ...) ride along in JSON.
    """

    __slots__ = ("_expr", "_constants", "_text_ph", "_text", "metrics", "provenance", "_cache")

    def __init__(
        self,
        expr: sympy.Expr,
        constants: Sequence[float] | Mapping[sympy.Symbol, float] = (),
        *,
        metrics: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(constants, Mapping):
            values = {k: float(v) for k, v in constants.items()}
        else:
            values = {_const_symbol(i): float(v) for i, v in enumerate(constants)}
        canon, vals, _, text_ph = _canonicalize(expr, values)
        self._set(canon, vals, text_ph, metrics, provenance)

    def _set(
        self, canon: sympy.Expr, vals: tuple[float, ...], text_ph: str, metrics: Any, provenance: Any
    ) -> None:
        self._expr = canon
        self._constants = vals
        self._text_ph = text_ph
        self._text = _fill(text_ph, [_fmt_float(v) for v in vals])
        self.metrics: dict[str, float] = {k: float(v) for k, v in (metrics or {}).items()}
        self.provenance: dict[str, Any] = dict(provenance or {})
        self._cache: dict[str, Any] = {}

    @classmethod
    def _with_occurrences(
        cls, expr: sympy.Expr, values: Mapping[sympy.Symbol, float], **kw: Any
    ) -> tuple[Equation, dict[sympy.Symbol, list[int]]]:
        """Build from an expression whose constant symbols may repeat; also return where each one went."""
        canon, vals, occ, text_ph = _canonicalize(expr, values)
        eq = cls.__new__(cls)
        eq._set(canon, vals, text_ph, kw.get("metrics"), kw.get("provenance"))
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
        """Parse equation text safely (see the module docstring for the grammar).

        Args:
            allowed_variables: if given, the only variable names accepted.
            name_map: raw names to variable names (e.g. PySR's ``x0`` -> ``g_0``), applied before checks.
            caret_is_pow: read ``^`` as power (Julia / PySR output) instead of refusing it.
        Raises:
            EquationParseError: for anything outside the grammar or over the caps.
        """
        expr, values = _parse_to_sympy(text, allowed_variables, name_map=name_map, caret_is_pow=caret_is_pow)
        try:
            return cls(expr, values, metrics=metrics, provenance=provenance)
        except (ValueError, NotImplementedError) as exc:
            raise EquationParseError(str(exc)) from None

    @classmethod
    def from_sympy(
        cls,
        expr: sympy.Expr,
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
            expr = expr.xreplace(
                {s: _var_symbol(name_map[s.name]) for s in expr.free_symbols if s.name in name_map}
            )
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
        return tuple(_const_symbol(i) for i in range(len(self._constants)))

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
        return _fill(self._text_ph, [f"c{i}" for i in range(len(self._constants))])

    @property
    def complexity(self) -> int:
        """Node count of the canonical expression tree (leaves, operators, calls; ``-0.5`` is one leaf)."""
        if "complexity" not in self._cache:
            self._cache["complexity"] = _ast_complexity(ast.parse(self._text, mode="eval"))
        return self._cache["complexity"]

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable names used, sorted by (feature, lag); the positional order of :meth:`compile`."""
        if "variables" not in self._cache:
            names = {s.name for s in self._expr.free_symbols if not _is_const_symbol(s)}
            self._cache["variables"] = tuple(sorted(names, key=split_variable))
        return self._cache["variables"]

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
            names[_var_symbol(v)] = rf"\mathit{{{fname}}}_{{t{'' if lag == 0 else f'-{lag}'}}}"
        return sympy.latex(self._expr.xreplace(subs), symbol_names=names)

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

        def const_value(e: sympy.Expr) -> float:
            return float(sympy.N(e.xreplace({s: sympy.Float(v, 17) for s, v in values.items()}), 17))

        def new(v: float) -> sympy.Symbol:
            s = sympy.Symbol(f"_f{len(new_values)}", real=True)
            new_values[s] = v
            return s

        def has_var(e: sympy.Expr) -> bool:
            return any(not _is_const_symbol(s) for s in e.free_symbols)

        def go(e: sympy.Expr) -> sympy.Expr:
            if isinstance(e, sympy.Symbol):
                return new(values[e]) if e in values else e
            if not e.free_symbols:
                return e
            if not has_var(e):
                return new(const_value(e))
            if isinstance(e, (sympy.Add, sympy.Mul)):
                fixed = [a for a in e.args if not has_var(a)]
                rest = [go(a) for a in e.args if has_var(a)]
                if any(a.free_symbols for a in fixed):
                    rest.append(new(const_value(e.func(*fixed))))
                else:
                    rest.extend(fixed)
                return e.func(*rest)
            return e.func(*[go(a) for a in e.args])

        return Equation(go(self._expr), new_values, metrics=self.metrics, provenance=self.provenance)

    # -- numeric evaluation
    def _np_fn(self) -> Callable:
        if "np" not in self._cache:
            idx = {s: i for i, s in enumerate(self.constant_symbols)}
            self._cache["np"] = _closure(self._expr, idx, _NP_OPS)
        return self._cache["np"]

    def evaluate(self, X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Evaluate in float64 numpy on ``X`` (a ``{name: array}`` dict, or a 2-D array with column ``names``).

        Returns an array shaped like the inputs (``[N]`` for columns); NaN/inf pass through.
        """
        env, n = _numpy_env(X, names, self.variables)
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
    ) -> CompiledEquation:
        """A torch module with one ``nn.Parameter`` per constant occurrence (or per ``tie_groups`` group)."""
        return CompiledEquation(self, dtype=dtype, tie_groups=tie_groups)

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
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "provenance": _jsonable(self.provenance),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Equation:
        """Inverse of :meth:`to_json` (a dict or a JSON string); the expression goes through the safe parser."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise EquationParseError(f"invalid equation JSON: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("expression"), str):
            raise EquationParseError("equation JSON needs a string field 'expression'")
        allowed = None
        if data.get("variables") is not None:
            allowed = set()
            for v in data["variables"]:
                name = v.get("name") if isinstance(v, Mapping) else v
                if not isinstance(name, str) or not is_variable_name(name):
                    raise EquationParseError(f"bad variable entry {v!r} in equation JSON")
                if (
                    isinstance(v, Mapping)
                    and "feature" in v
                    and (v["feature"], v.get("lag")) != split_variable(name)
                ):
                    raise EquationParseError(f"variable {name!r} disagrees with its feature/lag fields")
                allowed.add(name)
        metrics = {
            k: (float("nan") if v is None else float(v)) for k, v in (data.get("metrics") or {}).items()
        }
        eq = cls.parse(data["expression"], allowed, metrics=metrics, provenance=data.get("provenance") or {})
        consts = data.get("constants")
        if consts is not None:
            if len(consts) != eq.n_constants or not all(isinstance(c, (int, float)) for c in consts):
                raise EquationParseError(
                    f"equation JSON has {len(consts)} constants but its expression has {eq.n_constants}"
                )
            eq = eq.with_constants(consts).with_metrics(**metrics)
            eq.provenance = dict(data.get("provenance") or {})
        return eq

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (JSON)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Equation:
        """Read an equation JSON file written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())


def write_json(path: str | Path, data: Any) -> Path:
    """Write strict JSON (no NaN/inf) to ``path``, creating its folder; the one writer of equation files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def _jsonable(obj: Any) -> Any:
    """Best-effort conversion of provenance values to strict JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _numpy_env(
    X: Mapping[str, Any] | np.ndarray, names: Sequence[str] | None, needed: Sequence[str]
) -> tuple[dict[str, np.ndarray], tuple[int, ...] | None]:
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


# ----------------------------------------------------------------------------------------------------
# torch module


class CompiledEquation(nn.Module):
    """Differentiable torch version of an :class:`Equation`.

    ``forward`` takes a dict of tensors keyed by variable name, keyword tensors, or tensors positionally in
    :attr:`variables` order, and returns the update tensor. ``constants`` holds one scalar ``nn.Parameter``
    per constant occurrence (or per tie group); :meth:`to_equation` reads the trained values back.
    """

    def __init__(
        self,
        equation: Equation,
        *,
        dtype: torch.dtype | None = None,
        tie_groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.equation = equation
        self.variables: list[str] = list(equation.variables)
        n = equation.n_constants
        slot = list(range(n))
        if tie_groups:
            seen: set[int] = set()
            slot = [-1] * n
            next_slot = 0
            for group in tie_groups:
                for i in group:
                    if not 0 <= i < n or i in seen:
                        raise ValueError(f"bad tie group {list(group)} for {n} constants")
                    seen.add(i)
                    slot[i] = next_slot
                next_slot += 1
            for i in range(n):
                if slot[i] < 0:
                    slot[i] = next_slot
                    next_slot += 1
        self._slot = slot
        dtype = dtype or torch.get_default_dtype()
        first = {}
        for i, s in enumerate(slot):
            first.setdefault(s, i)
        self.constants = nn.ParameterList(
            [nn.Parameter(torch.tensor(equation.constants[first[s]], dtype=dtype)) for s in sorted(first)]
        )
        idx = {sym: slot[i] for i, sym in enumerate(equation.constant_symbols)}
        self._fn = _closure(equation.expr, idx, _TORCH_OPS)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fn", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        idx = {sym: self._slot[i] for i, sym in enumerate(self.equation.constant_symbols)}
        self._fn = _closure(self.equation.expr, idx, _TORCH_OPS)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            env = args[0]
        else:
            if len(args) > len(self.variables):
                raise TypeError(f"expected at most {len(self.variables)} positional inputs {self.variables}")
            env = dict(zip(self.variables, args, strict=False))
            env.update(kwargs)
        missing = [v for v in self.variables if v not in env]
        if missing:
            raise KeyError(f"missing inputs {missing} (equation variables: {self.variables})")
        consts = list(self.constants)
        out = self._fn((env, consts))
        like = next((env[v] for v in self.variables), consts[0] if consts else None)
        out = _as_tensor(out, like)
        if self.variables:
            shape = torch.broadcast_shapes(*(torch.as_tensor(env[v]).shape for v in self.variables))
            if out.shape != shape:
                out = out.expand(shape)
        return out

    def constant_values(self) -> list[float]:
        """Current value of every constant occurrence (canonical order)."""
        return [float(self.constants[s].detach()) for s in self._slot]

    def to_equation(self) -> Equation:
        """The equation with the module's current constant values."""
        eq = self.equation.with_constants(self.constant_values())
        eq.provenance = dict(self.equation.provenance)
        return eq

    def extra_repr(self) -> str:
        return f"{self.equation.text!r}"


# ----------------------------------------------------------------------------------------------------
# Pareto front


def _error(eq: Equation, split: str = "auto") -> float:
    """Fit error used for fronts: 1 - R² (held-out if known), else the backend's ``loss``."""
    m = eq.metrics
    keys = {"auto": ("r2_val", "r2_train"), "val": ("r2_val",), "train": ("r2_train",)}.get(split)
    if keys is None:
        raise ValueError(f"split must be 'auto', 'val' or 'train', got {split!r}")
    for k in keys:
        if k in m:
            v = 1.0 - m[k]
            return v if math.isfinite(v) else math.inf
    if split == "auto" and "loss" in m:
        return m["loss"] if math.isfinite(m["loss"]) else math.inf
    return math.inf


@dataclass
class ParetoFront:
    """Equations sorted by complexity, each with its metrics; usually the non-dominated set.

    Error is ``1 - r2_val`` when held-out scores exist, else ``1 - r2_train``, else ``loss``.
    """

    equations: list[Equation] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.equations = sorted(self.equations, key=lambda e: (e.complexity, _error(e), e.text))

    @classmethod
    def from_equations(
        cls,
        equations: Iterable[Equation],
        *,
        split: str = "auto",
        provenance: Mapping[str, Any] | None = None,
    ) -> ParetoFront:
        """The non-dominated subset of ``equations`` by (complexity, error)."""
        return cls(list(equations), dict(provenance or {})).nondominated(split)

    def error(self, eq: Equation, split: str = "auto") -> float:
        return _error(eq, split)

    def nondominated(self, split: str = "auto") -> ParetoFront:
        """Keep equations no simpler-or-equal one beats; duplicates (same text) and inf errors dropped."""
        best = math.inf
        kept: list[Equation] = []
        seen: set[str] = set()
        for eq in sorted(self.equations, key=lambda e: (e.complexity, _error(e, split), e.text)):
            err = _error(eq, split)
            if eq.text in seen or not err < best:
                continue
            seen.add(eq.text)
            best = err
            kept.append(eq)
        return ParetoFront(kept, dict(self.provenance))

    def merge(self, *others: ParetoFront, split: str = "auto") -> ParetoFront:
        """Non-dominated union of this front and ``others``."""
        eqs = list(self.equations)
        prov = dict(self.provenance)
        for o in others:
            eqs.extend(o.equations)
        prov["merged"] = len(others) + 1
        return ParetoFront(eqs, prov).nondominated(split)

    def score(
        self,
        X: Mapping[str, Any] | np.ndarray,
        y: np.ndarray,
        names: Sequence[str] | None = None,
        split: str = "val",
    ) -> ParetoFront:
        """A front whose equations carry ``r2_{split}``/``mse_{split}`` measured on (X, y) (not re-pruned)."""
        return ParetoFront([eq.score(X, y, names, split) for eq in self.equations], dict(self.provenance))

    def best(self, split: str = "auto") -> Equation:
        """Lowest-error equation (ties: simplest)."""
        if not self.equations:
            raise ValueError("empty Pareto front")
        return min(self.equations, key=lambda e: (_error(e, split), e.complexity))

    def at_complexity(self, max_complexity: int, split: str = "auto") -> Equation:
        """Best equation whose complexity is at most ``max_complexity``."""
        eqs = [e for e in self.equations if e.complexity <= max_complexity]
        if not eqs:
            raise ValueError(f"no equation with complexity <= {max_complexity}")
        return min(eqs, key=lambda e: (_error(e, split), e.complexity))

    @property
    def complexities(self) -> list[int]:
        return [e.complexity for e in self.equations]

    def errors(self, split: str = "auto") -> list[float]:
        return [_error(e, split) for e in self.equations]

    def __len__(self) -> int:
        return len(self.equations)

    def __iter__(self) -> Iterator[Equation]:
        return iter(self.equations)

    def __getitem__(self, i: int) -> Equation:
        return self.equations[i]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "symbolic-l2o/pareto-front",
            "version": 1,
            "provenance": _jsonable(self.provenance),
            "equations": [e.to_json() for e in self.equations],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> ParetoFront:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise EquationParseError(f"invalid Pareto front JSON: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("equations"), list):
            raise EquationParseError("Pareto front JSON needs a list field 'equations'")
        return cls([Equation.from_json(e) for e in data["equations"]], dict(data.get("provenance") or {}))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (JSON)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ParetoFront:
        return cls.from_json(Path(path).read_text())


# ----------------------------------------------------------------------------------------------------
# PySR hall of fame import

# PySR/Julia operator names that differ from ours (the custom sign-extended ones keep their names and are
# accepted as aliases by the parser).
_PYSR_NOTE = (
    "PySR's builtin `sqrt` and `^` are NaN for negative arguments: a hall-of-fame `sqrt` is read as our "
    "sign-extended sqrt (equal wherever PySR's was defined) and `^` as the plain power."
)


def import_hall_of_fame(
    source: str | Path | Iterable[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    *,
    allowed_variables: Iterable[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> ParetoFront:
    """Read PySR's ``hall_of_fame.csv`` (``Complexity,Loss,Equation``) through the safe parser.

    Args:
        source: a CSV path, CSV text, or rows (mappings with complexity/loss/equation keys, any case).
        names: our variable names for PySR's ``x0, x1, ...`` (column order of the fit).
        allowed_variables: restrict variable names (defaults to ``names`` when given).
    Returns:
        A front (not pruned) whose equations carry ``loss`` and ``pysr_complexity`` metrics. Rows that do
        not parse (e.g. ``Inf`` constants) are skipped with a warning and counted in provenance.
    """
    if isinstance(source, (str, Path)) and (isinstance(source, Path) or "\n" not in str(source)):
        text = Path(source).read_text()
        rows: Iterable[Mapping[str, Any]] = csv.DictReader(io.StringIO(text))
    elif isinstance(source, str):
        rows = csv.DictReader(io.StringIO(source))
    else:
        rows = source
    name_map = {f"x{i}": n for i, n in enumerate(names)} if names is not None else None
    if names is not None:
        for n in names:
            split_variable(n)
    allowed = set(allowed_variables) if allowed_variables is not None else (set(names) if names else None)
    eqs: list[Equation] = []
    skipped: list[str] = []
    for row in rows:
        low = {str(k).strip().lower(): v for k, v in row.items()}
        text = str(low.get("equation", "")).strip()
        try:
            loss = float(low.get("loss", "nan"))
            cplx = float(low.get("complexity", "nan"))
        except (TypeError, ValueError):
            loss, cplx = float("nan"), float("nan")
        try:
            eq = Equation.parse(
                text,
                allowed,
                name_map=name_map,
                caret_is_pow=True,
                metrics={"loss": loss, "pysr_complexity": cplx},
                provenance={"source": "pysr", "pysr_equation": text},
            )
        except EquationParseError as exc:
            skipped.append(f"{text}: {exc}")
            continue
        eqs.append(eq)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} hall-of-fame rows that do not parse, e.g. {skipped[0]}", stacklevel=2
        )
    prov = {"source": "pysr", "skipped": len(skipped), "note": _PYSR_NOTE, **dict(provenance or {})}
    return ParetoFront(eqs, prov)
