"""Matplotlib helpers every plot of the harness shares: the one PNG writer, a y-scale picker, a running mean.

Plots draw on the Agg canvas directly (no pyplot, no global backend switch), so they work in any process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["auto_yscale", "running_mean", "save_figure"]


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def auto_yscale(ax: Axes, values: Sequence[float] | np.ndarray) -> str:
    """Log scale when every finite value is positive and they span more than two decades; symlog when
    they change sign and span decades; else linear. Returns the scale set."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "linear"
    if v.min() > 0 and v.max() / v.min() > 100:
        ax.set_yscale("log")
        return "log"
    mag = np.abs(v[v != 0])
    if v.min() < 0 < v.max() and mag.size and mag.max() / max(float(np.abs(v.min())), 1e-300) > 20:
        # a loss that goes below 0 (quadratic-cos) and starts decades above: linear near 0, log above
        ax.set_yscale("symlog", linthresh=max(float(np.abs(v.min())), 1e-12), linscale=1.0)
        return "symlog"
    return "linear"


def running_mean(v: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, v.size))
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    out[k - 1 :] = (c[k:] - c[:-k]) / k
    out[: k - 1] = c[1:k] / np.arange(1, k)
    return out
