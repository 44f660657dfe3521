"""Symbolic-regression backends, registered in :data:`harness.registry.SR_BACKENDS`.

Built in: ``operon`` (pyoperon, the embedded default), ``pysr`` (needs Julia), ``skeleton`` (fit the
constants of a given form, e.g. the paper's eq. 6) and ``linear`` (least squares baseline). Backends are
registered as classes and instantiated with no arguments; heavy engines are imported only when used.
"""

from __future__ import annotations

from harness.registry import SR_BACKENDS
from harness.symbolic.sr.base import (
    DEFAULT_OPERATORS,
    PAPER_OPERATORS,
    SRBackend,
    SRSettings,
    check_fit_inputs,
    finish_front,
)
from harness.symbolic.sr.operon import OperonBackend
from harness.symbolic.sr.pysr import PySRBackend
from harness.symbolic.sr.skeleton import LinearBackend, SkeletonBackend

__all__ = [
    "DEFAULT_OPERATORS",
    "PAPER_OPERATORS",
    "LinearBackend",
    "OperonBackend",
    "PySRBackend",
    "SRBackend",
    "SRSettings",
    "SkeletonBackend",
    "check_fit_inputs",
    "finish_front",
    "get_backend",
]

SR_BACKENDS.register("operon", OperonBackend)
SR_BACKENDS.register("pysr", PySRBackend)
SR_BACKENDS.register("skeleton", SkeletonBackend)
SR_BACKENDS.register("linear", LinearBackend)


def get_backend(name: str) -> SRBackend:
    """Instantiate the registered backend ``name`` (unknown names list the known ones)."""
    return SR_BACKENDS.get(name)()
