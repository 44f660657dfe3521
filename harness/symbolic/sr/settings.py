"""The settings every SR backend takes (:class:`SRSettings`) and the operator sets.

Its own module, free of torch and of the equation class, so a suite's ``distill`` stage validates its
``settings:`` without importing the backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.symbolic.lang.names import normalize_operators

__all__ = ["DEFAULT_OPERATORS", "PAPER_OPERATORS", "SRSettings"]

PAPER_OPERATORS: tuple[str, ...] = (
    "add",
    "sub",
    "mul",
    "div",
    "square",
    "sqrt",
    "exp",
    "pow",
    "tanh",
    "asinh",
    "sinh",
    "relu",
    "erfc",
)
"""The paper's operator set (sqrt and pow sign-extended)."""

DEFAULT_OPERATORS: tuple[str, ...] = ("add", "sub", "mul", "div", "square", "sqrt", "exp", "tanh", "sinh")
"""Default: the paper's set minus what pyoperon lacks (asinh, relu, erfc) and minus pow (Operon can only
search |x|**y, which is a different function; ask for ``pow`` explicitly to get it)."""


SETTING_RANGES: dict[str, tuple[int, int]] = {
    "max_complexity": (1, 1000),
    "population_size": (1, 100_000),
    "iterations": (1, 1_000_000),
    "threads": (1, 1024),
    "optimizer_iterations": (0, 10_000),
}
"""The range of each integer setting: bounds that keep a fit (and its Pareto front) finite, far above use."""


@dataclass
class SRSettings:
    """Search settings shared by SR backends; backend-specific knobs go in ``extra``.

    Attributes:
        operators: operator names from :data:`~harness.symbolic.lang.OPERATOR_NAMES`.
        max_complexity: largest complexity (:attr:`Equation.complexity`) of a returned equation; also the
            backend's own size bound (Operon ``max_length``, PySR ``maxsize``).
        population_size, iterations: individuals per population; generations (Operon) / iterations (PySR).
        seed: random seed (same seed, same result on CPU with one thread).
        max_time_s, threads: wall-clock budget (None for none); worker threads.
        optimizer_iterations: iterations of constant optimisation per individual (0 turns it off).
        allow_offset: allow a gradient-free term (default False: every equation returned is zero when all
            its inputs are zero, :mod:`harness.symbolic.sr.offset`).
        extra: backend-specific options (passed through where documented by the backend).
    """

    operators: list[str] = field(default_factory=lambda: list(DEFAULT_OPERATORS))
    max_complexity: int = 30
    population_size: int = 200
    iterations: int = 300
    seed: int = 0
    max_time_s: float | None = None
    threads: int = 1
    optimizer_iterations: int = 10
    allow_offset: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.operators = normalize_operators(self.operators)
        for name, (low, high) in SETTING_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, float | np.floating) and float(value).is_integer():
                value = int(value)  # e.g. threads from a trial's CPU count (Ray gives floats)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
                raise ValueError(f"SRSettings.{name} must be an integer in {low}..{high:,}, got {value!r}")
            setattr(self, name, int(value))
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError("SRSettings.max_time_s must be > 0 or None")
        self.seed = int(self.seed)
        if not isinstance(self.allow_offset, (bool, np.bool_)):
            raise ValueError(f"SRSettings.allow_offset must be true or false, got {self.allow_offset!r}")
        self.allow_offset = bool(self.allow_offset)
        self.extra = dict(self.extra or {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SRSettings:
        """Build from a mapping; unknown keys raise so typos are caught."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SR settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))
