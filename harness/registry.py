"""One registry class for every plug-in kind: built-ins registered in code, plug-ins via entry points.

Entry-point groups: ``symbolic_l2o.optimizees``, ``symbolic_l2o.teachers``, ``symbolic_l2o.sr_backends``,
``symbolic_l2o.stages``.
An entry point's value is ``module:attribute``; the attribute is registered under the entry point's name.
Built-ins register the same way, by a ``"module:attribute"`` string, so listing names and checking a suite's
kwargs against an entry's ``params`` model import nothing heavy (``sl2o validate`` never imports torch); the
module is imported on the first :meth:`Registry.get`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` (did you mean 'evaluate'?)`` for the closest known name to a misspelt one, else empty."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _target(obj: Any) -> str:
    """``module:attribute`` of a class or function (of an instance: of its class)."""
    o = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{o.__module__}:{o.__qualname__}"


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
        #: entries registered by ``"module:attribute"``, imported on first :meth:`get`
        self._lazy: dict[str, str] = {}
        #: each entry's kwargs model (anything with ``model_validate``), when it declares one
        self._params: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str, obj: T | str | None = None, *, params: Any = None) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        ``obj`` may be a ``"module:attribute"`` string: the module is imported on the first :meth:`get` of
        ``name``. ``params`` is the entry's kwargs model (a pydantic model with the bounds of each keyword
        argument); :meth:`params` returns it without importing the entry.
        """
        if params is not None:
            self._params[name] = params

        def _add(o: T) -> T:
            stored = self._adapt(o) if self._adapt is not None else o
            if name in self._items and self._items[name] is not stored:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r})")
            if self._lazy.get(name, _target(o)) != _target(o):
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._lazy[name]})")
            self._lazy.pop(name, None)
            self._items[name] = stored
            return o

        if obj is None:
            return _add
        if isinstance(obj, str):
            have = self._items.get(name)
            if have is not None and _target(have) == obj:
                return obj  # its module was imported first and registered it
            if have is not None or self._lazy.get(name, obj) != obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._lazy[name] = obj
            return obj
        return _add(obj)

    def _resolve(self, name: str) -> None:
        target = self._lazy.get(name)
        if target is None:
            return
        module, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        if name in self._lazy:  # importing the module may register the entry itself (a decorator)
            del self._lazy[name]
            self._items[name] = self._adapt(obj) if self._adapt is not None else obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtins:
            importlib.import_module(mod)
        for ep in entry_points(group=self.group):
            if ep.name not in self._items and ep.name not in self._lazy:
                self._lazy[ep.name] = ep.value  # "module:attribute", imported on the first get()

    def get(self, name: str) -> T:
        """Return the entry named ``name``; an unknown name raises with the list of known ones."""
        self._load()
        self._resolve(name)
        try:
            return self._items[name]
        except KeyError:
            raise self._unknown(name) from None

    def require(self, name: str) -> None:
        """Raise (with the known names) unless ``name`` is registered; imports nothing."""
        if name not in self:
            raise self._unknown(name)

    def params(self, name: str) -> Any:
        """The kwargs model ``name`` declares (None when it declares none), without importing the entry."""
        self.require(name)
        return self._params.get(name)

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any], what: str) -> None:
        """Refuse ``kwargs`` that entry ``name`` does not take: against its kwargs model (names, types and
        bounds, without importing the entry) or, when it declares none, its signature's names.

        Raises:
            ValueError: naming each wrong argument (at most 5) and, for an unknown name, those it takes.
        """
        model = self.params(name)
        if model is None:
            _check_signature(self.get(name), kwargs, what)
            return
        from pydantic import ValidationError

        try:
            model.model_validate(dict(kwargs))
        except ValidationError as err:
            known = ", ".join(model.model_fields)
            lines = []
            for e in err.errors():
                arg = ".".join(str(x) for x in e["loc"]) or "kwargs"
                if e["type"] == "extra_forbidden":
                    lines.append(
                        f"takes no argument {arg}{did_you_mean(arg, model.model_fields)}; it takes: {known}"
                    )
                else:
                    lines.append(f"{arg}: {e['msg'][:200]}")
            raise ValueError(f"{what}: " + "; ".join(lines[:5])) from None

    def describe(self, name: str) -> str:
        """The docstring of entry ``name``, read from its module's source when the entry is not imported yet
        (``sl2o list`` imports no plug-in); imports the entry only when the source does not define it."""
        self.require(name)
        target = self._lazy.get(name)
        if target is not None:
            module, _, attr = target.partition(":")
            doc = _source_docstring(module, attr)
            if doc is not None:
                return doc
        obj = self.get(name)
        return getattr(obj, "__doc__", None) or getattr(type(obj), "__doc__", None) or ""

    def _unknown(self, name: str) -> UnknownNameError:
        known = ", ".join(self.names()) or "(none)"
        return UnknownNameError(
            f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; known {self.kind}s: {known}. "
            f"Plug-ins register through the {self.group!r} entry-point group."
        )

    def names(self) -> list[str]:
        """Sorted names of every registered entry (importing none of them)."""
        self._load()
        return sorted({*self._items, *self._lazy})

    def items(self) -> Iterator[tuple[str, T]]:
        """Every entry, sorted by name (importing those registered lazily)."""
        return iter([(name, self.get(name)) for name in self.names()])

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items or name in self._lazy


def _source_docstring(module: str, qualname: str) -> str | None:
    """The docstring of the class or function ``qualname`` defined in ``module``'s source file, parsed with
    ``ast`` (nothing runs); None when the module has no source or does not define it there."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages, not the module
        origin = spec.origin if spec is not None else None
        if not origin or not origin.endswith(".py"):
            return None
        with open(origin, encoding="utf-8") as fh:
            tree: ast.AST = ast.parse(fh.read(), origin)
    except (ImportError, ValueError, OSError, SyntaxError):
        return None
    for part in qualname.split("."):
        body = getattr(tree, "body", [])
        found = [
            n
            for n in body
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.name == part
        ]
        if not found:
            return None
        tree = found[-1]
    return ast.get_docstring(tree) if isinstance(tree, ast.ClassDef | ast.FunctionDef) else None


def _check_signature(factory: Any, kwargs: Mapping[str, Any], what: str) -> None:
    """Refuse kwargs the factory's signature does not take (unless it takes ``**kwargs``)."""
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    bad = sorted(set(kwargs) - set(params))
    if bad:
        known = ", ".join(k for k in params if k not in ("self", "seed", "device"))
        raise ValueError(f"{what} takes no argument(s) {', '.join(bad)}; it takes: {known}")


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
