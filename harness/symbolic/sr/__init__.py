"""Symbolic-regression backends, registered in :data:`harness.registry.SR_BACKENDS`.

Built in: ``operon`` (pyoperon, the embedded default), ``pysr`` (needs Julia), ``skeleton`` (fit the
constants of a given form, e.g. the paper's eq. 6) and ``linear`` (least squares baseline). Backends are
registered by name and instantiated with no arguments; a backend's module (and its engine) is imported on its
first use, and this facade's names (``__init__.pyi``) on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from harness.registry import SR_BACKENDS

if TYPE_CHECKING:
    from harness.symbolic.sr.base import SRBackend

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

SR_BACKENDS.register("operon", "harness.symbolic.sr.operon:OperonBackend")
SR_BACKENDS.register("pysr", "harness.symbolic.sr.pysr:PySRBackend")
SR_BACKENDS.register("skeleton", "harness.symbolic.sr.skeleton:SkeletonBackend")
SR_BACKENDS.register("linear", "harness.symbolic.sr.skeleton:LinearBackend")


def get_backend(name: str) -> SRBackend:
    """Instantiate the registered backend ``name`` (unknown names list the known ones)."""
    return SR_BACKENDS.get(name)()
