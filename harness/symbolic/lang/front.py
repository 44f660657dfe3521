"""Pareto fronts of equations: sorted by complexity, pruned to the non-dominated set, merged, scored, JSON.

Error is :func:`~harness.symbolic.metrics.fit_error`: ``1 - r2_val`` when held-out scores exist, else
``1 - r2_train``, else the backend's ``loss``. Complexity is
:func:`~harness.symbolic.metrics.fitted_complexity`: the equation's own unless it carries the complexity
of the form that was fitted (a distilled equation unscaled to raw units), the quantity ``max_complexity``
bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.jsonio import loads_json, read_text, to_jsonable, write_json
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.names import MAX_FRONT_EQUATIONS, MAX_FRONT_TEXT, EquationParseError
from harness.symbolic.metrics import fit_error, fitted_complexity

__all__ = ["ParetoFront"]


def check_front_size(equations: Sequence[Any]) -> None:
    """Refuse a front over :data:`MAX_FRONT_EQUATIONS` equations or :data:`MAX_FRONT_TEXT` characters of
    equation text (JSON entries with an ``expression``), before any equation is parsed."""
    if len(equations) > MAX_FRONT_EQUATIONS:
        raise EquationParseError(
            f"Pareto front has {len(equations):,} equations, over the cap of {MAX_FRONT_EQUATIONS:,}"
        )
    total = sum(
        len(e["expression"])
        for e in equations
        if isinstance(e, Mapping) and isinstance(e.get("expression"), str)
    )
    if total > MAX_FRONT_TEXT:
        raise EquationParseError(
            f"Pareto front has {total:,} characters of equation text, over the cap of {MAX_FRONT_TEXT:,}"
        )


@dataclass
class ParetoFront:
    """Equations sorted by complexity, each with its metrics; usually the non-dominated set.

    Error is ``1 - r2_val`` when held-out scores exist, else ``1 - r2_train``, else ``loss``; complexity
    is :func:`~harness.symbolic.metrics.fitted_complexity`.
    """

    equations: list[Equation] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.equations = sorted(self.equations, key=lambda e: (fitted_complexity(e), fit_error(e), e.text))

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
        """:func:`~harness.symbolic.metrics.fit_error` of ``eq``."""
        return fit_error(eq, split)

    def nondominated(self, split: str = "auto") -> ParetoFront:
        """Keep equations no simpler-or-equal one beats; duplicates (same text) and inf errors dropped."""
        best = math.inf
        kept: list[Equation] = []
        seen: set[str] = set()
        for eq in sorted(self.equations, key=lambda e: (fitted_complexity(e), fit_error(e, split), e.text)):
            err = fit_error(eq, split)
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
        return min(self.equations, key=lambda e: (fit_error(e, split), fitted_complexity(e)))

    def at_complexity(self, max_complexity: int, split: str = "auto") -> Equation:
        """Best equation whose (fitted) complexity is at most ``max_complexity``."""
        eqs = [e for e in self.equations if fitted_complexity(e) <= max_complexity]
        if not eqs:
            raise ValueError(f"no equation with complexity <= {max_complexity}")
        return min(eqs, key=lambda e: (fit_error(e, split), fitted_complexity(e)))

    @property
    def complexities(self) -> list[int]:
        """(Fitted) complexity of each equation, in front order."""
        return [fitted_complexity(e) for e in self.equations]

    def errors(self, split: str = "auto") -> list[float]:
        """Fit error of each equation, in front order."""
        return [fit_error(e, split) for e in self.equations]

    def __len__(self) -> int:
        return len(self.equations)

    def __iter__(self) -> Iterator[Equation]:
        return iter(self.equations)

    def __getitem__(self, i: int) -> Equation:
        return self.equations[i]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: format tag, provenance (made strict JSON) and every equation's JSON."""
        return {
            "format": "symbolic-l2o/pareto-front",
            "version": 1,
            "provenance": to_jsonable(self.provenance),
            "equations": [e.to_json() for e in self.equations],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> ParetoFront:
        """Inverse of :meth:`to_json` (a dict or a JSON string); equations go through the safe parser."""
        if isinstance(data, str):
            data = loads_json(data, "Pareto front", EquationParseError)
        if not isinstance(data, Mapping) or not isinstance(data.get("equations"), list):
            raise EquationParseError("Pareto front JSON needs a list field 'equations'")
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise EquationParseError("Pareto front JSON field 'provenance' must be a mapping")
        check_front_size(data["equations"])
        return cls([Equation.from_json(e) for e in data["equations"]], dict(provenance))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (JSON)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ParetoFront:
        """Read a front JSON file written by :meth:`save`."""
        return cls.from_json(read_text(path, "Pareto front", EquationParseError))
