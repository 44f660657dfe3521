"""Table 3 rows of a finished distill stage: one per source, from its ``chosen.json`` and merged front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.stages.outputs import (
    MERGED_FRONT_FILE,
)
from harness.symbolic.lang import Equation, ParetoFront


def fmt(v: Any) -> str:
    """A metric to 3 significant digits; ``n/a`` for a missing or non-finite one."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def distill_rows(chosen_files: Sequence[Path], stage: str = "") -> list[dict[str, Any]]:
    """One row per source (teacher) of a finished distill stage: the paper's Table 3 columns.

    ``chosen_files`` are the stage's ``chosen.json`` files (one per source, each beside its merged
    ``front.json``). Columns: ``stage``, ``source``, ``equation`` (constants to 4 digits), ``complexity``
    (of the raw equation) and ``complexity_scaled`` (of the fitted form, what ``max_complexity`` bounds),
    ``r2_val``, ``tpf`` and ``tpf_<feature>``, ``mc``, ``front_size``, ``input_dependent_fraction`` (see
    :func:`~harness.stages.distill.fit.target_varying_fraction`), ``target_varying_fraction`` and ``learned``
    (False when the source is a teacher that did not learn).
    """
    rows = []
    for path in sorted(chosen_files):
        eq = Equation.load(path)
        merged = path.parent / MERGED_FRONT_FILE
        front = ParetoFront.load(merged) if merged.exists() else None
        source = eq.provenance.get("source") or {}
        label = source.get("label") or source.get("rule") or source.get("checkpoint") or path.parent.name
        m = eq.metrics
        row: dict[str, Any] = {
            "stage": stage,
            "source": str(label),
            "equation": str(eq.with_constants([float(f"{c:.4g}") for c in eq.constants])),
            "complexity": eq.complexity,
            "complexity_scaled": int(m["complexity_scaled"]) if "complexity_scaled" in m else None,
            "r2_val": m.get("r2_val", m.get("r2_train")),
            "tpf": m.get("tpf"),
            "mc": front.provenance.get("mc") if front is not None else None,
            "front_size": len(front) if front is not None else None,
            "input_dependent_fraction": m.get("input_dependent_fraction"),
            "target_varying_fraction": front.provenance.get("target_varying_fraction") if front else None,
            "learned": source.get("learned", True) is not False,
        }
        row.update({k: v for k, v in sorted(m.items()) if k.startswith("tpf_")})
        rows.append(row)
    return rows
