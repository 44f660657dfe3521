"""Matplotlib plots of a suite's results for ``sl2o report``: loss curves with a 95% CI band, performance
profiles, meta-training curves with curriculum steps, and meta-tuning before/after.

Pure plotting (no MLflow, no Ray): each function takes plain data, draws on the Agg canvas directly (no
pyplot, no global backend switch) and writes one PNG. :mod:`harness.report.html` gathers the data.
Plots about equations (Pareto fronts, the update rule's shape) live in :mod:`harness.symbolic.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from harness.report.across import TAUS, profiles
from harness.symbolic import plots as symbolic_plots

__all__ = [
    "auto_yscale",
    "plot_loss_curves",
    "plot_meta_train",
    "plot_meta_tune",
    "plot_profile",
    "save_figure",
]

Curve = Sequence[tuple[int, float]]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created); returns the path."""
    return symbolic_plots.save_figure(fig, path, dpi=110)


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


def _t95(n: int) -> float:
    """The two-sided 95% Student-t quantile for ``n`` samples (``n - 1`` degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else math.nan


def mean_ci(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, and the 95% t-interval's low/high over seeds, on the steps every curve logged."""
    if not curves:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    common = set.intersection(*[{s for s, _ in c} for c in curves])
    steps = np.array(sorted(common), dtype=np.float64)
    if steps.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    vals = np.array([[dict(c)[int(s)] for s in steps] for c in curves], dtype=np.float64)
    mean = vals.mean(axis=0)
    n = vals.shape[0]
    if n < 2:
        return steps, mean, mean, mean
    half = _t95(n) * vals.std(axis=0, ddof=1) / math.sqrt(n)
    return steps, mean, mean - half, mean + half


def _legend_right(ax: Axes, n: int) -> None:
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if n <= 18 else 2, frameon=False
    )


def optimizer_styles(names: Sequence[str], highlight: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """One colour (and line style) per optimizer, the same in every panel and plot: learned/symbolic
    optimizers (``highlight``) first, thick, cycling line styles so identical curves still show each other."""
    from matplotlib import colormaps

    order = sorted(set(names), key=lambda o: (o not in highlight, o))
    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    styles = ["-", "--", ":", "-."]
    out = {}
    for k, o in enumerate(order):
        strong = o in highlight
        out[o] = {
            "color": cmap(k % cmap.N),
            "linewidth": 2.2 if strong else 1.1,
            "linestyle": styles[k % len(styles)] if strong else "-",
        }
    return out


def _figure_legend(fig: Figure, handles: Mapping[str, Any], height: float) -> None:
    """One legend for every panel, below them; leaves room for it."""
    if not handles:
        fig.tight_layout()
        return
    ncol = min(3, len(handles))
    rows = math.ceil(len(handles) / ncol)
    frac = min(0.45, (0.22 * rows + 0.15) / height)
    fig.tight_layout(rect=(0.0, frac, 1.0, 1.0))
    fig.legend(
        list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8, frameon=False
    )


def _draw_bands(
    ax: Axes,
    bands: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, Any]],
    highlight: Sequence[str],
    scale: str,
) -> None:
    """CI bands: filled, except one wider than most of the panel (a few very different seeds), which would
    wash over every other curve: only its edges are drawn then, thin and dotted."""
    y0, y1 = ax.get_ylim()
    for opt, steps, lo, hi, color in bands:
        if scale == "linear" and y1 > y0:
            width = float(np.nanmedian(np.minimum(hi, y1) - np.maximum(lo, y0)))
            if width > 0.6 * (y1 - y0):
                for edge in (lo, hi):
                    ax.plot(steps, edge, color=color, linewidth=0.6, linestyle=":", alpha=0.6)
                continue
        alpha = 0.15 if opt in highlight else 0.05
        ax.fill_between(steps, lo, hi, color=color, alpha=alpha, linewidth=0)
    ax.set_ylim(y0, y1)


def plot_loss_curves(
    curves: Mapping[str, Mapping[str, Sequence[Curve]]],
    path: str | Path,
    *,
    highlight: Sequence[str] = (),
    ylabel: str = "train loss",
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """One panel per optimizee (``curves[optimizee][optimizer]`` = per-seed ``[(step, loss), ...]``): each
    optimizer's mean over seeds with its 95% t-interval band. Optimizers in ``highlight`` (learned and
    symbolic ones) are drawn thick; one legend below the panels; log (or symlog, for losses that go below 0)
    scale when the losses span decades."""
    tasks = list(curves)
    styles = styles or optimizer_styles([o for t in tasks for o in curves[t]], highlight)
    ncols = min(2, max(1, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    height = 4.0 * nrows + 0.3 * math.ceil(len(styles) / 3) + 0.3
    fig = Figure(figsize=(6.5 * ncols, height))
    handles: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        by_opt = curves[task]
        shown: list[float] = []
        bands: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, Any]] = []
        seeds = 0
        for opt in sorted(by_opt, key=lambda o: list(styles).index(o) if o in styles else len(styles)):
            steps, mean, lo, hi = mean_ci(by_opt[opt])
            if steps.size == 0:
                continue
            st = styles.get(opt) or {"color": "k", "linewidth": 1.0, "linestyle": "-"}
            seeds = max(seeds, len(by_opt[opt]))
            (line,) = ax.plot(steps, mean, label=opt, **st)
            handles.setdefault(opt, line)
            if len(by_opt[opt]) > 1:
                bands.append((opt, steps, lo, hi, st["color"]))
            shown.extend(mean[np.isfinite(mean)].tolist())
        scale = auto_yscale(ax, shown)
        if shown:  # keep a diverging optimizer's blow-up (or a wide band) from flattening everything else
            lo_q, hi_q = np.percentile(shown, [0.5, 99.0])
            if scale == "linear" and hi_q > lo_q:
                pad = 0.08 * (hi_q - lo_q)
                ax.set_ylim(lo_q - pad, hi_q + pad)
        _draw_bands(ax, bands, highlight, scale)
        ax.set_title(f"{task}\nmean over {seeds} seed(s), 95% CI band", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel + {"log": " (log scale)", "symlog": " (symlog: linear near 0)"}.get(scale, ""))
        ax.grid(True, alpha=0.3)
    _figure_legend(fig, handles, height)
    return save_figure(fig, path)


def plot_profile(
    times: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    highlight: Sequence[str] = (),
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """The performance profile ``rho(tau)`` (fraction of tasks where an optimizer's time to target is within
    ``tau`` times the best one's) as steps over a log ``tau`` axis; the reported :data:`TAUS` are marked."""
    ratios = [
        t / min(ts.values())
        for ts in times.values()
        for t in ts.values()
        if ts and math.isfinite(t) and math.isfinite(min(ts.values())) and min(ts.values()) > 0
    ]
    tmax = max([TAUS[-1], *ratios]) * 1.5
    taus = np.geomspace(1.0, tmax, 200)
    prof = profiles(times, list(taus))
    fig = Figure(figsize=(8.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    order = sorted(prof, key=lambda o: (-prof[o][-1], -prof[o][0], o))
    styles = styles or optimizer_styles(order, highlight)
    n_tasks = max(1, len(times))
    for k, opt in enumerate(order):
        jitter = 0.008 * (k - (len(order) - 1) / 2)  # ties would hide each other exactly
        reached = round(prof[opt][-1] * n_tasks)
        st = styles.get(opt) or {"color": "k", "linewidth": 1.0, "linestyle": "-"}
        ax.step(
            taus,
            np.asarray(prof[opt]) + jitter,
            where="post",
            label=f"{opt} (reached {reached}/{n_tasks})",
            **st,
        )
    for tau in TAUS:
        ax.axvline(tau, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlim(1.0, tmax)
    ticks = [t for t in (1, 1.25, 1.5, 2, 3, 4, 6, 10, 20, 50, 100, 1000) if t <= tmax]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("tau (time to target / best time to target on the task)")
    ax.set_ylabel("rho(tau): fraction of tasks")
    ax.set_title(f"performance profile over {len(times)} optimizee(s)", fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend_right(ax, len(order))
    fig.tight_layout()
    return save_figure(fig, path)


def _running_mean(v: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, v.size))
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    out[k - 1 :] = (c[k:] - c[:-k]) / k
    out[: k - 1] = c[1:k] / np.arange(1, k)
    return out


def plot_meta_train(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Meta-training of each teacher: the per-episode meta-loss (raw, faint, and a running mean) and the
    validation loss, with curriculum steps as vertical lines.

    Each run is ``{"label", "meta_loss": [(episode, v)], "val_loss": [(episode, v)], "cl_steps":
    [(episode, event, unroll length)]}``."""
    n = max(1, len(runs))
    fig = Figure(figsize=(11, 3.8 * n))
    for i, run in enumerate(runs):
        ax_m = fig.add_subplot(n, 2, 2 * i + 1)
        ax_v = fig.add_subplot(n, 2, 2 * i + 2)
        ml = np.array(run.get("meta_loss") or [], dtype=np.float64).reshape(-1, 2)
        vl = np.array(run.get("val_loss") or [], dtype=np.float64).reshape(-1, 2)
        if ml.size:
            k = max(1, ml.shape[0] // 50)
            faint: dict[str, Any] = (
                {"alpha": 0.25, "linewidth": 0.6} if k > 1 else {"marker": "o", "markersize": 3}
            )
            ax_m.plot(ml[:, 0], ml[:, 1], color="tab:blue", label="per episode", **faint)
            if k > 1:
                ax_m.plot(ml[:, 0], _running_mean(ml[:, 1], k), color="tab:blue", label=f"running mean ({k})")
            auto_yscale(ax_m, ml[:, 1])
        if vl.size:
            ax_v.plot(vl[:, 0], vl[:, 1], "o-", color="tab:orange", markersize=3, label="validation loss")
            best = int(np.nanargmin(vl[:, 1]))
            ax_v.plot(vl[best, 0], vl[best, 1], "*", color="k", markersize=10, label="best (kept)")
            auto_yscale(ax_v, vl[:, 1])
        for ax in (ax_m, ax_v):
            for j, (ep, event, length) in enumerate(run.get("cl_steps") or []):
                ax.axvline(
                    ep,
                    color="tab:green",
                    linestyle="--",
                    linewidth=1,
                    label="curriculum step" if j == 0 else None,
                )
                if ax is ax_v and length:
                    ax.annotate(
                        f"{event}: T={length}",
                        (ep, 1.0),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        va="top",
                        ha="right",
                        fontsize=7,
                        color="tab:green",
                    )
            ax.set_xlabel("episode")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        ax_m.set_ylabel("meta-loss (training unrolls)")
        ax_v.set_ylabel("validation loss")
        cl = run.get("curriculum")
        if cl and not run.get("cl_steps"):
            cl_note = " (curriculum on, never advanced)"
        else:
            cl_note = f" ({len(run.get('cl_steps') or [])} curriculum step(s))" if cl else ""
        ax_m.set_title(f"{run.get('label', '')}: meta-loss{cl_note}", fontsize=10)
        ax_v.set_title(f"{run.get('label', '')}: validation", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_meta_tune(trials: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Meta-tuning of each equation: held-out and train loss before/after, the tuned constants against the
    initial ones, and (Optuna) the objective per trial.

    Each trial is ``{"label", "kept", "before": {...}, "after": {...}, "initial": [c...], "tuned": [c...],
    "objective": [values]}`` (``before``/``after`` hold ``val_loss`` (meta_tune's selection criterion), ``final_train_loss``
    and, when recorded, ``test_loss``)."""
    n = max(1, len(trials))
    fig = Figure(figsize=(14, 3.8 * n))
    for i, tr in enumerate(trials):
        ax_l = fig.add_subplot(n, 3, 3 * i + 1)
        ax_c = fig.add_subplot(n, 3, 3 * i + 2)
        ax_o = fig.add_subplot(n, 3, 3 * i + 3)
        before, after = tr.get("before") or {}, tr.get("after") or {}
        keys = [k for k in ("val_loss", "test_loss", "final_train_loss") if k in before or k in after]
        x = np.arange(len(keys))
        b = [before.get(k, math.nan) for k in keys]
        a = [after.get(k, math.nan) for k in keys]
        ax_l.bar(x - 0.2, b, 0.4, label="before (initial constants)", color="0.6")
        ax_l.bar(x + 0.2, a, 0.4, label="after (tuned constants)", color="tab:purple")
        ax_l.axhline(0, color="k", linewidth=0.6)
        labels = {
            "val_loss": "validation loss",
            "test_loss": "test loss (info)",
            "final_train_loss": "final train loss",
        }
        ax_l.set_xticks(x, [labels[k] for k in keys])
        ax_l.set_ylabel("loss (mean over eval seeds)")
        ax_l.set_title(f"{tr.get('label', '')}: kept {tr.get('kept', '?')}", fontsize=10)
        ax_l.margins(y=0.3)  # headroom for the legend
        ax_l.legend(fontsize=7, loc="upper center", ncol=2)
        ax_l.grid(True, axis="y", alpha=0.3)
        init = np.asarray(tr.get("initial") or [], dtype=np.float64)
        tuned = np.asarray(tr.get("tuned") or [], dtype=np.float64)
        if init.size and tuned.size == init.size:
            idx = np.arange(init.size)
            ax_c.bar(idx - 0.2, np.abs(init), 0.4, color="0.6", label="initial |c|")
            ax_c.bar(idx + 0.2, np.abs(tuned), 0.4, color="tab:purple", label="tuned |c|")
            ax_c.set_xticks(idx, [f"c{j}" for j in idx], fontsize=7, rotation=90 if init.size > 20 else 0)
            auto_yscale(ax_c, np.concatenate([np.abs(init), np.abs(tuned)]))
            flipped = int(np.sum(np.sign(init) != np.sign(tuned)))
            ax_c.set_title(
                f"constants: initial vs tuned{f' ({flipped} changed sign)' if flipped else ''}", fontsize=10
            )
            ax_c.legend(fontsize=7, loc="best")
        else:
            ax_c.text(
                0.5, 0.5, "no tuned constants recorded", ha="center", va="center", transform=ax_c.transAxes
            )
            ax_c.set_title("constants", fontsize=10)
        ax_c.set_ylabel("|constant|")
        ax_c.grid(True, axis="y", alpha=0.3)
        obj = np.asarray(tr.get("objective") or [], dtype=np.float64)
        if obj.size:
            xs = np.arange(obj.size)
            ok = np.isfinite(obj)
            ax_o.plot(xs[ok], obj[ok], "o", markersize=3, color="0.5", label="trial")
            best = np.fmin.accumulate(np.where(ok, obj, np.inf))
            ax_o.step(xs, best, where="post", color="tab:purple", label="best so far")
            ax_o.axhline(obj[0], color="0.3", linestyle=":", linewidth=1, label="initial constants")
            auto_yscale(ax_o, obj[ok])
            diverged = np.isposinf(obj)
            if diverged.any():  # drawn at the top edge: their objective is a penalty, not a loss
                top = blended_transform_factory(ax_o.transData, ax_o.transAxes)
                ax_o.plot(
                    xs[diverged],
                    np.full(int(diverged.sum()), 0.96),
                    "x",
                    color="tab:red",
                    transform=top,
                    clip_on=False,
                    label="diverged",
                )
            ax_o.set_xlabel(str(tr.get("objective_x", "trial")))
            ax_o.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_o.legend(fontsize=7, loc="best")
        else:
            ax_o.text(0.5, 0.5, "no search history", ha="center", va="center", transform=ax_o.transAxes)
        ax_o.set_ylabel(str(tr.get("objective_label", "tuning objective")))
        ax_o.set_title("search", fontsize=10)
        ax_o.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
