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
from matplotlib.figure import Figure

from harness.plotting import save_figure
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.metrics import fit_error, tpf

__all__ = ["plot_pareto", "plot_tpf", "plot_tpf_from_metrics", "plot_update_rule"]


def _fronts(fronts: ParetoFront | Mapping[str, ParetoFront]) -> dict[str, ParetoFront]:
    if isinstance(fronts, ParetoFront):
        return {"front": fronts}
    return dict(fronts)


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
    return save_figure(fig, path, dpi=120)


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
    return save_figure(fig, path, dpi=120)


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
    return save_figure(fig, path, dpi=120)


def _binned(x: np.ndarray, v: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and means of ``v`` over quantile bins of ``x`` (empty bins left out)."""
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size < 2:
        return np.array([float(np.mean(x))]), np.array([float(np.mean(v))])
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    centres, means = [], []
    for b in range(edges.size - 1):
        sel = which == b
        if sel.any():
            centres.append(float(np.mean(x[sel])))
            means.append(float(np.mean(v[sel])))
    return np.asarray(centres), np.asarray(means)


def update_rule_variables(eq: Any, X: np.ndarray, names: Sequence[str], max_vars: int = 6) -> list[str]:
    """The equation's input variables present in ``names``: the ``max_vars`` most influential (by the absolute
    correlation of the equation's output with the variable on ``X``), shown in the dataset's column order
    (feature, then lag: ``g_hat_0, g_hat_1, g_hat_2``), so panels read in a stable order."""
    used = [v for v in eq.variables if v in names]
    pred = np.asarray(eq.evaluate(X, names), dtype=np.float64)

    def strength(v: str) -> float:
        x = X[:, list(names).index(v)]
        ok = np.isfinite(x) & np.isfinite(pred)
        if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(pred[ok]) == 0:
            return 0.0
        return abs(float(np.corrcoef(x[ok], pred[ok])[0, 1]))

    chosen = sorted(used, key=lambda v: (-strength(v), v))[:max_vars]
    order = list(names)
    return sorted(chosen, key=order.index)


def plot_update_rule(
    eq: Any,
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    max_vars: int = 6,
    max_points: int = 3000,
    n_bins: int = 20,
    title: str | None = None,
) -> Path:
    """The teacher's update and the equation's update against each input the equation uses.

    ``X``/``y`` are RAW held-out rows (inputs named ``names``, the teacher's update as target) and ``eq``
    the raw-unit equation. One panel per variable (at most ``max_vars``, most influential first): the
    teacher's updates as a scatter, and the binned means (quantile bins of the variable) of the teacher's
    and of the equation's update, so the rule's shape along that input is visible. Axes are clipped to the
    central 99% of the data so a few outliers do not squash the rest.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(eq.evaluate(X, names), dtype=np.float64)
    variables = update_rule_variables(eq, X, names, max_vars)
    n = max(1, len(variables))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 0.6))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(y), size=min(max_points, len(y)), replace=False) if len(y) else np.zeros(0, int)
    ylo, yhi = (
        np.nanpercentile(np.concatenate([y, pred[np.isfinite(pred)]]), [0.5, 99.5]) if len(y) else (0, 1)
    )
    for i, var in enumerate(variables):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        x = X[:, list(names).index(var)]
        ax.scatter(x[pick], y[pick], s=5, alpha=0.3, color="0.45", linewidths=0, label="teacher (rows)")
        ok = np.isfinite(pred) & np.isfinite(x)
        cx, cy = _binned(x[ok], y[ok], n_bins)
        ax.plot(cx, cy, "-", color="tab:blue", linewidth=2, label="teacher (binned mean)")
        px, py = _binned(x[ok], pred[ok], n_bins)
        ax.plot(px, py, "--", color="tab:red", linewidth=2, label="equation (binned mean)")
        xlo, xhi = np.nanpercentile(x, [0.5, 99.5])
        if xhi > xlo:
            pad = 0.05 * (xhi - xlo)
            ax.set_xlim(xlo - pad, xhi + pad)
        if yhi > ylo:
            pad = 0.05 * (yhi - ylo)
            ax.set_ylim(ylo - pad, yhi + pad)
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_xlabel(var)
        ax.set_ylabel("update")
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
        if i == 0:
            ax.legend(fontsize=7, loc="best", markerscale=3)
    if not variables:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "the equation uses no input variable", ha="center", va="center")
    fig.suptitle(title or "teacher vs equation update along each input", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
