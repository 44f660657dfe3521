"""The baseline grids (``baselines.yaml``), their loader, and :func:`cross`: the one grid crossing.

A grid block's, or a suite optimizer entry's, list-valued fields are crossed into one config per combination.
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
def _read(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise GridError(f"grid file {path!r} does not exist")
    try:
        data = read_yaml(p) or {}
    except YAMLInputError as err:
        raise GridError(str(err)) from None
    grids = data.get("grids") if isinstance(data, dict) else None
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
