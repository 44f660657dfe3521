"""Import of PySR's ``hall_of_fame.csv`` (``Complexity,Loss,Equation``) through the safe parser.

PySR's equation strings name columns ``x0, x1, ...`` and write powers as ``^``; they are mapped to our
variable names and parsed like any other equation text (never evaluated).
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.features import parse_variable
from harness.jsonio import read_text
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.names import EquationParseError

__all__ = ["import_hall_of_fame"]


# PySR/Julia operator names that differ from ours (the custom sign-extended ones keep their names and are
# accepted as aliases by the parser).
_PYSR_NOTE = (
    "PySR's builtin `sqrt` and `^` are NaN for negative arguments: a hall-of-fame `sqrt` is read as our "
    "sign-extended sqrt (equal wherever PySR's was defined) and `^` as the plain power."
)


#: the largest hall-of-fame file read, and the most rows parsed (PySR writes one per complexity: tens)
MAX_HALL_OF_FAME_BYTES = 4 * 2**20
MAX_HALL_OF_FAME_ROWS = 1000


def import_hall_of_fame(
    source: str | Path | Iterable[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    *,
    allowed_variables: Iterable[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> ParetoFront:
    """Read PySR's ``hall_of_fame.csv`` (``Complexity,Loss,Equation``) through the safe parser.

    Args:
        source: a CSV path, CSV text, or rows (mappings with complexity/loss/equation keys, any case).
        names: our variable names for PySR's ``x0, x1, ...`` (column order of the fit).
        allowed_variables: restrict variable names (defaults to ``names`` when given).
    Returns:
        A front (not pruned) whose equations carry ``loss`` and ``pysr_complexity`` metrics. Rows that do
        not parse (e.g. ``Inf`` constants) are skipped with a warning and counted in provenance.
    """
    if isinstance(source, (str, Path)) and (isinstance(source, Path) or "\n" not in str(source)):
        text = read_text(source, "PySR hall of fame", EquationParseError, MAX_HALL_OF_FAME_BYTES)
        rows: Iterable[Mapping[str, Any]] = csv.DictReader(io.StringIO(text))
    elif isinstance(source, str):
        rows = csv.DictReader(io.StringIO(source))
    else:
        rows = source
    name_map = {f"x{i}": n for i, n in enumerate(names)} if names is not None else None
    if names is not None:
        for n in names:
            parse_variable(n)
    allowed = set(allowed_variables) if allowed_variables is not None else (set(names) if names else None)
    eqs: list[Equation] = []
    skipped: list[str] = []
    for i, row in enumerate(rows):
        if i >= MAX_HALL_OF_FAME_ROWS:
            skipped.append(f"rows after the first {MAX_HALL_OF_FAME_ROWS} (not read)")
            break
        low = {str(k).strip().lower(): v for k, v in row.items()}
        text = str(low.get("equation", "")).strip()
        try:
            loss = float(low.get("loss", "nan"))
            cplx = float(low.get("complexity", "nan"))
        except (TypeError, ValueError):
            loss, cplx = float("nan"), float("nan")
        try:
            eq = Equation.parse(
                text,
                allowed,
                name_map=name_map,
                caret_is_pow=True,
                metrics={"loss": loss, "pysr_complexity": cplx},
                provenance={"source": "pysr", "pysr_equation": text},
            )
        except EquationParseError as exc:
            skipped.append(f"{text}: {exc}")
            continue
        eqs.append(eq)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} hall-of-fame rows that do not parse, e.g. {skipped[0]}", stacklevel=2
        )
    prov = {"source": "pysr", "skipped": len(skipped), "note": _PYSR_NOTE, **dict(provenance or {})}
    return ParetoFront(eqs, prov)
