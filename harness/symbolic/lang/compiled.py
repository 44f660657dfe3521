"""The torch lowering of an equation as an ``nn.Module``: one trainable scalar per constant occurrence.

Kept apart from :mod:`harness.symbolic.lang.expression` (which builds it in ``Equation.compile``) and typed
against the small :class:`CompilableEquation` protocol, so the two modules import in one direction only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import sympy
import torch
from torch import nn

from harness.symbolic.lang.lowering import Closure, closure
from harness.symbolic.lang.torch_ops import TORCH_OPS, as_tensor

__all__ = ["CompilableEquation", "CompiledEquation"]

E = TypeVar("E", bound="CompilableEquation")


class CompilableEquation(Protocol):
    """What :class:`CompiledEquation` reads of an equation (:class:`~harness.symbolic.lang.expression.Equation`)."""

    provenance: dict[str, Any]

    @property
    def expr(self) -> sympy.Expr: ...

    @property
    def constants(self) -> tuple[float, ...]: ...

    @property
    def constant_symbols(self) -> tuple[sympy.Symbol, ...]: ...

    @property
    def n_constants(self) -> int: ...

    @property
    def variables(self) -> tuple[str, ...]: ...

    @property
    def text(self) -> str: ...

    def with_constants(self: E, values: Sequence[float]) -> E: ...


class CompiledEquation(nn.Module, Generic[E]):
    """Differentiable torch version of an :class:`~harness.symbolic.lang.expression.Equation`.

    ``forward`` takes a dict of tensors keyed by variable name, keyword tensors, or tensors positionally in
    :attr:`variables` order, and returns the update tensor. ``constants`` holds one scalar ``nn.Parameter``
    per constant occurrence (or per tie group); :meth:`to_equation` reads the trained values back.
    """

    def __init__(
        self,
        equation: E,
        *,
        dtype: torch.dtype | None = None,
        tie_groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.equation: E = equation
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
        self._slot: list[int] = slot
        dtype = dtype or torch.get_default_dtype()
        first: dict[int, int] = {}
        for i, s in enumerate(slot):
            first.setdefault(s, i)
        self.constants = nn.ParameterList(
            [nn.Parameter(torch.tensor(equation.constants[first[s]], dtype=dtype)) for s in sorted(first)]
        )
        idx = {sym: slot[i] for i, sym in enumerate(equation.constant_symbols)}
        self._fn: Closure = closure(equation.expr, idx, TORCH_OPS)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fn", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        idx = {sym: self._slot[i] for i, sym in enumerate(self.equation.constant_symbols)}
        self._fn = closure(self.equation.expr, idx, TORCH_OPS)

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
        out = as_tensor(out, like)
        if self.variables:
            shape = torch.broadcast_shapes(*(torch.as_tensor(env[v]).shape for v in self.variables))
            if out.shape != shape:
                out = out.expand(shape)
        return out

    def constant_values(self) -> list[float]:
        """Current value of every constant occurrence (canonical order)."""
        return [float(self.constants[s].detach()) for s in self._slot]

    def to_equation(self) -> E:
        """The equation with the module's current constant values."""
        eq = self.equation.with_constants(self.constant_values())
        eq.provenance = dict(self.equation.provenance)
        return eq

    def extra_repr(self) -> str:
        return f"{self.equation.text!r}"
