"""The baseline grids and search spaces (``baselines.yaml``), their loaders, and :func:`cross`: the one grid
crossing.

A grid block's, or a suite optimizer entry's, list-valued fields are crossed into one config per combination.
A search space (``spaces:``, read by :func:`load_space`) is what an ``hpo`` stage's Optuna search samples: per
config field a range (``{low, high, log}``), a list of choices, or a fixed value, and a ``start`` point.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from search_spaces.safe_yaml import YAMLInputError, read_yaml

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines.yaml"
MAX_GRID_CONFIGS = 10_000
"""Most optimizer configs one grid (or one list-valued optimizer entry of a suite) may expand to."""


class GridError(ValueError):
    """An unknown grid name or a malformed grid file."""


@lru_cache(maxsize=16)
def _read_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise GridError(f"grid file {path!r} does not exist")
    try:
        data = read_yaml(p) or {}
    except YAMLInputError as err:
        raise GridError(str(err)) from None
    if not isinstance(data, dict):
        raise GridError(f"{path}: expected a mapping with 'grids:' (and optionally 'spaces:')")
    return data


def _read(path: str) -> dict[str, Any]:
    grids = _read_file(path).get("grids")
    if not isinstance(grids, dict):
        raise GridError(f"{path}: expected a top-level 'grids:' mapping of name -> list of blocks")
    return grids


def check_grid_size(values: list[list[Any]], where: str, already: int = 0) -> None:
    """Refuse crossing ``values`` when, with ``already`` configs, it passes :data:`MAX_GRID_CONFIGS`."""
    total = already + math.prod(len(v) for v in values)
    if total > MAX_GRID_CONFIGS:
        raise GridError(f"{where} crosses to {total} optimizer configs, more than {MAX_GRID_CONFIGS}")


def cross(block: Mapping[str, Any], where: str = "this entry", already: int = 0) -> list[dict[str, Any]]:
    """One dict per combination of ``block``'s list-valued fields (the rest held), keys sorted, in a stable
    order; refused past :data:`MAX_GRID_CONFIGS` (counting ``already`` configs before it)."""
    keys = sorted(block)
    values = [block[k] if isinstance(block[k], list) else [block[k]] for k in keys]
    check_grid_size(values, where, already)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def grid_names(file: str | None = None) -> list[str]:
    """Names of the grids in ``file`` (default: search_spaces/baselines.yaml)."""
    return sorted(_read(str(file or BASELINES)))


def load_grid(name: str, file: str | None = None) -> list[dict[str, Any]]:
    """The expanded list of optimizer configs of grid ``name``, in a stable order."""
    path = str(file or BASELINES)
    grids = _read(path)
    if name not in grids:
        raise GridError(f"unknown grid {name!r} in {path}; known grids: {', '.join(sorted(grids))}")
    out: list[dict[str, Any]] = []
    for i, block in enumerate(grids[name]):
        if not isinstance(block, dict) or "family" not in block:
            raise GridError(f"{path}: grids.{name}[{i}] must be a mapping with a 'family' field")
        out += cross(block, f"{path}: grids.{name}[{i}]", len(out))
    return out


# -- search spaces ------------------------------------------------------------------------------------------
#: the keys of a range in a search space
RANGE_KEYS = ("low", "high", "log")


def space_names(file: str | None = None) -> list[str]:
    """Names of the search spaces in ``file`` (default: search_spaces/baselines.yaml)."""
    spaces = _read_file(str(file or BASELINES)).get("spaces") or {}
    return sorted(spaces) if isinstance(spaces, dict) else []


def load_space(name: str, file: str | None = None) -> dict[str, Any]:
    """Search space ``name``: ``{"family", "params": {field: range | choices | value}, "start": {...}}``.

    A range is ``{"low", "high", "log"}`` (floats, ``low < high``, ``log`` needs ``low > 0``), choices a
    non-empty list, anything else a value every trial gets. ``start`` (optional) is the point tried first:
    a value for each sampled field, inside its range or among its choices. Every error names the field.
    """
    path = str(file or BASELINES)
    spaces = _read_file(path).get("spaces") or {}
    if not isinstance(spaces, dict) or name not in spaces:
        known = ", ".join(sorted(spaces)) if isinstance(spaces, dict) else "none"
        raise GridError(f"unknown search space {name!r} in {path}; known spaces: {known}")
    where = f"{path}: spaces.{name}"
    raw = spaces[name]
    if not isinstance(raw, dict) or not isinstance(raw.get("family"), str):
        raise GridError(f"{where} must be a mapping with a 'family' field")
    params: dict[str, Any] = {}
    for key, val in raw.items():
        if key in ("family", "start"):
            continue
        if isinstance(val, dict):
            params[key] = _range(val, f"{where}.{key}")
        elif isinstance(val, list):
            if not val:
                raise GridError(f"{where}.{key}: a list of choices must not be empty")
            params[key] = list(val)
        else:
            params[key] = val
    start = raw.get("start") or {}
    if not isinstance(start, dict):
        raise GridError(f"{where}.start must be a mapping of field -> value")
    for key, val in start.items():
        p = params.get(key)
        ok = (
            (isinstance(p, dict) and isinstance(val, (int, float)) and p["low"] <= val <= p["high"])
            or (isinstance(p, list) and val in p)
        )
        if not ok:
            raise GridError(f"{where}.start.{key}: {val!r} is not a sampled value of that field ({p!r})")
    return {"family": raw["family"], "params": params, "start": dict(start)}


def _range(val: dict[str, Any], where: str) -> dict[str, Any]:
    """A checked ``{low, high, log}`` range."""
    unknown = sorted(set(val) - set(RANGE_KEYS))
    if unknown:
        raise GridError(f"{where}: unknown keys {', '.join(unknown)}; a range takes {', '.join(RANGE_KEYS)}")
    try:
        low, high = float(val["low"]), float(val["high"])
    except (KeyError, TypeError, ValueError):
        raise GridError(f"{where}: a range needs numbers low and high") from None
    log = bool(val.get("log", False))
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise GridError(f"{where}: need finite low < high, got {low} and {high}")
    if log and low <= 0:
        raise GridError(f"{where}: a log range needs low > 0, got {low}")
    return {"low": low, "high": high, "log": log}
