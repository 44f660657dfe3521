"""A safe, capped YAML reader for suite and grid files (untrusted input).

``yaml.SafeLoader`` builds no Python objects but plain data; this module adds caps that it lacks: file
size, nesting depth, alias uses and the size aliases expand to ("billion laughs"), recursive aliases,
and a clear error for text that is not UTF-8. Every refusal is one :class:`YAMLInputError` line that
names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_YAML_ALIASES",
    "MAX_YAML_ALIAS_NODES",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "YAMLInputError",
    "parse_yaml",
    "read_yaml",
]


class YAMLInputError(ValueError):
    """A YAML file that is not read: too large, too deep, an alias bomb, not UTF-8, not valid YAML, or a
    mapping that gives one key twice."""


MAX_YAML_BYTES = 1_000_000
"""Largest suite (or grid) file read, in bytes."""
MAX_YAML_DEPTH = 50
"""Deepest nesting of lists and mappings in a YAML document (aliases expanded)."""
MAX_YAML_ALIASES = 100
"""Most alias uses (``*name``) in a YAML document."""
MAX_YAML_ALIAS_NODES = 10_000
"""Most nodes that alias uses may add to a document when expanded (refuses "billion laughs" files)."""


class _YamlCapError(Exception):
    """A YAML document over one of the caps above."""


def _event_loader() -> type:
    """The loader class the caps extend: libyaml's scanner and parser (C) giving events to PyYAML's Python
    composer, where PyYAML has libyaml (4x faster than ``yaml.SafeLoader``'s pure-Python scanner on a large
    file); else ``yaml.SafeLoader``. Composing stays in Python either way, so the caps see every node."""
    try:
        from yaml._yaml import CParser  # pyright: ignore[reportMissingModuleSource]
    except ImportError:
        return yaml.SafeLoader

    class CEventLoader(yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return CEventLoader


class _CappedLoader(_event_loader()):  # type: ignore[misc]
    """A safe YAML loader that counts while it composes, before any Python object is built.

    It refuses nesting deeper than :data:`MAX_YAML_DEPTH`, more than :data:`MAX_YAML_ALIASES` alias uses,
    aliases that together expand to more than :data:`MAX_YAML_ALIAS_NODES` nodes, and recursive aliases.
    Sizes and depths of anchored nodes are memoised, so the counting is linear in the file.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._alias_nodes = 0
        self._open_anchors: set[str] = set()
        self._measured: dict[int, tuple[int, int]] = {}

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """``(nodes, depth)`` of ``node`` with aliases expanded (its depth is bounded by the caps)."""
        key = id(node)
        if key not in self._measured:
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [x for kv in node.value for x in kv]
            else:
                children = []
            parts = [self._measure(c) for c in children]
            self._measured[key] = (1 + sum(n for n, _ in parts), 1 + max((d for _, d in parts), default=0))
        return self._measured[key]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are unique: a key given twice is refused (YAML would keep the last silently)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it below with its own error
                continue
            if dup:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlCapError(f"more than {MAX_YAML_ALIASES} alias uses (*name)")
            if event.anchor in self._open_anchors:
                raise _YamlCapError(f"alias *{event.anchor} refers to a node that contains it (recursive)")
            node: Any = super().compose_node(parent, index)
            nodes, depth = self._measure(node)
            self._alias_nodes += nodes
            if self._alias_nodes > MAX_YAML_ALIAS_NODES:
                raise _YamlCapError(
                    f"aliases expand to more than {MAX_YAML_ALIAS_NODES} nodes (an alias bomb?)"
                )
            if self._depth + depth > MAX_YAML_DEPTH:
                raise _YamlCapError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlCapError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.discard(anchor)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with the safe, capped loader; raise YAMLInputError naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLInputError(f"{source}: larger than {MAX_YAML_BYTES} characters; refusing to read it")
    loader: _CappedLoader | None = None
    try:
        loader = _CappedLoader(text)  # its reader (libyaml's or PyYAML's) refuses unprintable characters
        return loader.get_single_data()
    except _YamlCapError as err:
        raise YAMLInputError(f"{source}: refused: {err}") from None
    except yaml.MarkedYAMLError as err:
        if "maximum nesting depth" in str(err.problem):  # libyaml's own cap (1000), far above ours
            raise YAMLInputError(f"{source}: refused: nested deeper than {MAX_YAML_DEPTH} levels") from None
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(x for x in (err.context, err.problem) if x) or "syntax error"
        raise YAMLInputError(f"{source}: not valid YAML{where}: {' '.join(what.split())}") from None
    except yaml.YAMLError as err:
        raise YAMLInputError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # e.g. a 5000-digit integer
        raise YAMLInputError(f"{source}: not valid YAML: {type(err).__name__}: {err}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file within :data:`MAX_YAML_BYTES` that is UTF-8 text; YAMLInputError otherwise."""
    p = Path(path)
    if not p.is_file():
        what = (
            "is a directory, not a file"
            if p.is_dir()
            else "is not a regular file"
            if p.exists()
            else "does not exist"
        )
        raise YAMLInputError(f"{str(p)!r} {what}")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise YAMLInputError(f"{p}: cannot read it: {err.strerror or err}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise YAMLInputError(f"{p}: larger than {MAX_YAML_BYTES} bytes; refusing to read it")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise YAMLInputError(
            f"{p}: not UTF-8 text (it looks like UTF-16/32 or binary data); save it as UTF-8"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise YAMLInputError(
            f"{p}: not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8"
        ) from None
    return parse_yaml(text, str(p))
