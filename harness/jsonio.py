"""Strict JSON in one place: the sanitizer every artifact writer uses, and an atomic file writer.

Strict means what ``json.dumps(..., allow_nan=False)`` accepts: non-finite floats become ``None``,
numpy scalars and arrays become Python numbers and lists, anything else unknown becomes its ``str``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_JSON_BYTES",
    "dumps",
    "flatten_params",
    "loads_json",
    "read_text",
    "to_jsonable",
    "write_json",
]

#: the largest JSON text read from a file (equations, fronts): a larger one is refused before parsing
MAX_JSON_BYTES = 16 * 2**20


def to_jsonable(obj: Any) -> Any:
    """A strict-JSON copy of ``obj`` (non-finite floats -> None, numpy -> Python, unknown -> str)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """``json.dumps`` of the strict copy of ``obj`` (never emits NaN or Infinity)."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write strict JSON to ``path`` atomically (temp file + rename), creating its folder.

    A reader never sees a half-written file: either the old content or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(data, indent=indent) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``a.b.c`` keys with string values (MLflow params); lists as JSON."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_params(v, key + "."))
        else:
            out[key] = json.dumps(to_jsonable(v)) if isinstance(v, list | tuple) else str(v)
    return out


def read_text(
    path: str | Path, what: str = "text", error: type[Exception] = ValueError, max_bytes: int | None = None
) -> str:
    """The text of an untrusted file (JSON, CSV): a regular file of at most ``max_bytes`` (default
    :data:`MAX_JSON_BYTES`), UTF-8 (else ``error`` naming ``what``; FileNotFoundError when it does not exist)."""
    cap = MAX_JSON_BYTES if max_bytes is None else max_bytes
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise error(f"{what} file {str(p)!r} is not a regular file")
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    if p.stat().st_size > cap:
        raise error(f"{what} file {str(p)!r} is larger than {cap} bytes")
    try:
        with p.open("rb") as fh:
            return fh.read(cap + 1).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} file {str(p)!r} is not UTF-8 text (byte {exc.start})") from None


def loads_json(text: str, what: str = "JSON", error: type[Exception] = ValueError) -> Any:
    """``json.loads`` of untrusted text: bad, too long or too deeply nested JSON is one ``error``."""
    if len(text) > MAX_JSON_BYTES:
        raise error(f"{what} JSON too long ({len(text)} > {MAX_JSON_BYTES} characters)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"invalid {what} JSON: {exc}") from None
    except RecursionError:
        raise error(f"invalid {what} JSON: nested too deeply") from None
