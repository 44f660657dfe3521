"""Safe parser of equation text: Python ``ast`` checked node by node and turned into sympy directly.

Nothing is ever ``eval``-ed, ``sympify``-ed or ``parse_expr``-ed (they execute code). Only numbers, known
variable names, ``+ - * / **``, unary ``- +`` and the grammar's functions pass; text length, AST size and
depth, exponents and structural integers are capped, so hostile input is refused with
:class:`~harness.symbolic.lang.names.EquationParseError` before anything expensive happens. Every float literal
becomes its own fresh constant symbol (see :func:`parse_to_sympy`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from typing import cast

import sympy

from harness.symbolic.lang.functions import FUNCTIONS, NUMERIC_ERRORS, spow
from harness.symbolic.lang.names import (
    MAX_AST_DEPTH,
    MAX_AST_NODES,
    MAX_EXPONENT,
    MAX_INT_LITERAL,
    MAX_STRUCTURAL_BITS,
    MAX_TEXT_LENGTH,
    EquationParseError,
    split_variable,
    var_symbol,
)

__all__ = ["parse_to_sympy"]


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
            if max(abs(int(e.p)).bit_length(), abs(int(e.q)).bit_length()) > MAX_STRUCTURAL_BITS:
                raise EquationParseError("a structural number in the expression is too large")
            return e
        if e.is_extended_real is False:
            raise EquationParseError(f"the expression has a non-real number ({e})")
        try:
            v = float(sympy.N(e))
        except NUMERIC_ERRORS as exc:
            raise EquationParseError(f"the expression has a number that is undefined or not real ({e})") from exc
        if not math.isfinite(v):
            raise EquationParseError(f"the expression has a non-finite number ({e})")
        return e

    def _check_exponent(self, base: sympy.Expr, exponent: sympy.Expr | float) -> None:
        value = float(exponent)
        if abs(value) > MAX_EXPONENT:
            raise EquationParseError(f"exponent {value:g} is too large (|exponent| <= {MAX_EXPONENT:g})")
        if isinstance(base, sympy.Rational) and isinstance(exponent, sympy.Rational):
            bits = max(abs(int(base.p)).bit_length(), abs(int(base.q)).bit_length())
            if bits * abs(value) > MAX_STRUCTURAL_BITS:
                raise EquationParseError("a structural power in the expression is too large")

    # -- main dispatch
    def build(self, node: ast.AST) -> sympy.Expr:
        lit = self._float_literal(node)
        if lit is not None:
            return self._const(lit)
        if isinstance(node, ast.Constant):
            v = node.value
            if type(v) is int:
                if abs(v) > MAX_INT_LITERAL:
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
        try:
            split_variable(name)
        except ValueError as err:
            if "maximum lag" in str(err):  # a variable name, with a lag over MAX_LAG
                raise EquationParseError(str(err)) from None
            hint = " (a function name must be called)" if name in FUNCTIONS else ""
            shown = repr(raw) if len(raw) <= 60 else repr(raw[:60] + "...")
            raise EquationParseError(
                f"unknown name {shown}{hint}; variables look like feature_lag, e.g. g_0"
            ) from None
        if self.allowed is not None and name not in self.allowed:
            known = ", ".join(sorted(self.allowed)[:20]) + (" ..." if len(self.allowed) > 20 else "")
            raise EquationParseError(f"unknown variable {name!r}; allowed: {known}")
        return var_symbol(name)

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
        if isinstance(op, ast.Add | ast.Sub | ast.Mult | ast.Div):
            return self._chain(node)
        raise EquationParseError(f"binary operator {type(op).__name__} is not allowed")

    def _chain(self, node: ast.BinOp) -> sympy.Expr:
        """A run of ``+``/``-`` (or of ``*``/``/``) built at once, walking its left spine without recursion: a
        sum of a thousand terms nests no deeper than one term (see :func:`_check_ast_size`). Building
        ``2*(a + b)/c`` as one product also keeps sympy from distributing the 2 over the sum (it does so for a
        product of a number and a sum alone), so the printed text parses back to the same expression."""
        additive = isinstance(node.op, ast.Add | ast.Sub)
        family = (ast.Add, ast.Sub) if additive else (ast.Mult, ast.Div)
        rights: list[tuple[ast.AST, bool]] = []  # (operand, negated or inverted), right to left
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, family):
            rights.append((cur.right, isinstance(cur.op, ast.Sub | ast.Div)))
            cur = cur.left
        first = self.build(cur)
        if additive:
            rest = [(-self.build(r) if neg else self.build(r)) for r, neg in reversed(rights)]
            return self._check_number(sympy.Add(first, *rest))
        factors = [first]
        for r, inverted in reversed(rights):
            f = self.build(r)
            if inverted and f == 0:
                raise EquationParseError("division by the structural number 0")
            factors.append(sympy.Pow(f, -1) if inverted else f)
        return self._check_number(sympy.Mul(*factors))

    def _call(self, node: ast.Call) -> sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise EquationParseError(
                f"only calls of known functions are allowed, not {type(node.func).__name__}"
            )
        name = node.func.id
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise EquationParseError(f"unknown function {name!r}; known: {', '.join(sorted(FUNCTIONS))}")
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
        if isinstance(fn.build, type) and issubclass(fn.build, sympy.Function):
            # unevaluated: sympy's automatic evaluation of a function asks assumptions of its whole argument
            # (is it finite? real? zero?), which is superlinear in the argument's size; the text says what
            # the user wrote, and printing and lowering do not need sympy to rewrite it
            return self._check_number(cast(sympy.Expr, fn.build(*args, evaluate=False)))
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
            # the left operand of a run of + - (or of *) is the same level: a long sum is not deep
            same_run = (
                isinstance(node, ast.BinOp)
                and child is node.left
                and isinstance(child, ast.BinOp)
                and _run_family(child.op) is not None
                and _run_family(child.op) == _run_family(node.op)
            )
            stack.append((child, depth if same_run else depth + 1))


def _run_family(op: ast.operator) -> str | None:
    if isinstance(op, ast.Add | ast.Sub):
        return "add"
    if isinstance(op, ast.Mult | ast.Div):
        return "mul"
    return None


def parse_to_sympy(
    text: str,
    allowed_variables: Iterable[str] | None = None,
    *,
    name_map: Mapping[str, str] | None = None,
    caret_is_pow: bool = False,
) -> tuple[sympy.Expr, dict[sympy.Symbol, float]]:
    """Parse ``text`` into sympy over variable symbols and one fresh symbol per float literal.

    Returns the expression and the literal values keyed by their symbols (in text order). Raises
    EquationParseError for anything outside the grammar, over the caps, or (with ``allowed_variables``)
    naming another variable; ``name_map`` renames raw names first, ``caret_is_pow`` reads ``^`` as ``**``.
    """
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
