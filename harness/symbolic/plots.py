"""Matplotlib plots of distillation results: Pareto fronts and TPF (Temporal Perception Field) against
complexity, saved as PNG.

Figures are drawn on the Agg canvas directly (no pyplot, no global backend switch), so this works in
headless workers and never opens windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.symbolic.front import ParetoFront
from harness.symbolic.metrics import fit_error, tpf

__all__ = ["plot_pareto", "plot_tpf", "plot_tpf_from_metrics"]


def _fronts(fronts: ParetoFront | Mapping[str, ParetoFront]) -> dict[str, ParetoFront]:
    if isinstance(fronts, ParetoFront):
        return {"front": fronts}
    return dict(fronts)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_pareto(
    fronts: ParetoFront | Mapping[str, ParetoFront],
    path: str | Path,
    *,
    split: str = "auto",
    title: str | None = None,
    mc_complexity: int | None = None,
) -> Path:
    """Complexity vs R² (``1 - error``; held-out when available) for one or several labelled fronts.

    ``mc_complexity`` draws a vertical line at the MC pick. Returns the PNG path.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, front in _fronts(fronts).items():
        pts = [(e.complexity, 1.0 - fit_error(e, split)) for e in front]
        pts = [(c, r) for c, r in pts if math.isfinite(r)]
        if not pts:
            continue
        c, r = zip(*sorted(pts), strict=True)
        ax.step(c, r, where="post", alpha=0.6)
        ax.plot(c, r, "o", label=label, markersize=4)
    if mc_complexity is not None:
        ax.axvline(mc_complexity, color="k", linestyle="--", linewidth=1, label=f"MC = {mc_complexity}")
    ax.set_xlabel("complexity")
    ax.set_ylabel({"val": "held-out R²", "train": "train R²"}.get(split, "R² (held-out if available)"))
    ax.set_title(title or "Pareto front")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_tpf(
    fronts: ParetoFront | Mapping[str, ParetoFront],
    X: Mapping[str, Any] | np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    *,
    per_feature: bool = False,
    title: str | None = None,
) -> Path:
    """TPF (sensitivity form) of every equation against its complexity; optionally one line per feature."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, front in _fronts(fronts).items():
        rows = [(e.complexity, tpf(e, X, names)) for e in front]
        c = [r[0] for r in rows]
        ax.plot(c, [r[1].overall for r in rows], "o-", label=f"{label}: overall", markersize=4)
        if per_feature:
            feats = sorted({f for _, t in rows for f in t.per_feature})
            for f in feats:
                ax.plot(c, [t.per_feature.get(f, math.nan) for _, t in rows], ".--", label=f"{label}: {f}")
    ax.set_xlabel("complexity")
    ax.set_ylabel("TPF (mean lag weighted by sensitivity)")
    ax.set_title(title or "Temporal Perception Field vs complexity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_tpf_from_metrics(front: ParetoFront, path: str | Path) -> Path:
    """TPF against complexity from the ``tpf`` metrics distill stored (when no data is at hand).

    Equations without a ``tpf`` metric are drawn as gaps. Returns the PNG path.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    c = [e.complexity for e in front]
    ax.plot(c, [e.metrics.get("tpf", math.nan) for e in front], "o-", markersize=4, label="overall")
    ax.set_xlabel("complexity")
    ax.set_ylabel("TPF (mean lag weighted by sensitivity)")
    ax.set_title("Temporal Perception Field vs complexity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
