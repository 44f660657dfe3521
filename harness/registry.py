"""One registry class for every plug-in kind: built-ins registered in code, plug-ins via entry points.

Entry-point groups: ``symbolic_l2o.optimizees``, ``symbolic_l2o.teachers``, ``symbolic_l2o.sr_backends``,
``symbolic_l2o.stages``.
An entry point's value is ``module:attribute``; the attribute is registered under the entry point's name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` (did you mean 'evaluate'?)`` for the closest known name to a misspelt one, else empty."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class UnknownNameError(KeyError, ValueError):
    """Raised for a name no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table for one plug-in kind (optimizees, teachers, SR backends).

    Args:
        kind: human name used in error messages ("optimizee").
        group: entry-point group scanned once, lazily, for third-party plug-ins.
        builtins: modules imported lazily on first lookup; importing them registers the built-ins.
        adapt: applied to every object registered (in code or from an entry point); it may check the
            object and return what is stored (e.g. an instance of a registered class).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: tuple[str, ...] = (),
        adapt: Callable[[Any], T] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._adapt = adapt
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(o: T) -> T:
            stored = self._adapt(o) if self._adapt is not None else o
            if name in self._items and self._items[name] is not stored:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r})")
            self._items[name] = stored
            return o

        if obj is None:
            return _add
        return _add(obj)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtins:
            importlib.import_module(mod)
        for ep in entry_points(group=self.group):
            if ep.name not in self._items:
                obj = ep.load()
                self._items[ep.name] = self._adapt(obj) if self._adapt is not None else obj

    def get(self, name: str) -> T:
        """Return the entry named ``name``; an unknown name raises with the list of known ones."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; known {self.kind}s: {known}. "
                f"Plug-ins register through the {self.group!r} entry-point group."
            ) from None

    def names(self) -> list[str]:
        """Sorted names of every registered entry."""
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


OPTIMIZEES: Registry[Callable[..., Any]] = Registry(
    "optimizee", "symbolic_l2o.optimizees", builtins=("optimizees",)
)
TEACHERS: Registry[Callable[..., Any]] = Registry("teacher", "symbolic_l2o.teachers", builtins=("teachers",))
SR_BACKENDS: Registry[Callable[..., Any]] = Registry(
    "SR backend", "symbolic_l2o.sr_backends", builtins=("harness.symbolic.sr",)
)


def _stage_kind(obj: Any) -> Any:
    """A registered stage kind: an instance of a ``harness.stages.base.StageKind`` subclass (a class is
    instantiated), checked with its ``check()`` (duck-typed here, so the registry imports no stage code)."""
    kind = obj() if isinstance(obj, type) else obj
    missing = [
        a for a in ("check", "plan", "run", "finalize", "spec_model", "trial_model") if not hasattr(kind, a)
    ]
    if missing:
        raise TypeError(
            f"a stage kind must be a harness.stages.base.StageKind, got {obj!r} (no {', '.join(missing)})"
        )
    kind.check()
    return kind


STAGES: Registry[Any] = Registry(
    "stage kind", "symbolic_l2o.stages", builtins=("harness.stages.kinds",), adapt=_stage_kind
)
