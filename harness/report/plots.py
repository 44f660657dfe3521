"""The leaderboard's plots: loss curves with a 95% CI band per task, and the performance profile.

Plain data in, one PNG out (Agg canvas, no pyplot). Stage kinds draw their own panels (``report`` modules
under ``harness/stages``); equation plots live in :mod:`harness.symbolic.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from harness.plotting import auto_yscale, save_figure
from harness.report.across import TAUS, profiles

__all__ = ["TimelineTrial", "pack_lanes", "plot_loss_curves", "plot_profile", "plot_timeline"]

Curve = Sequence[tuple[int, float]]


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


def finite_parts(curves: Sequence[Curve]) -> tuple[list[Curve], bool]:
    """Each seed's curve up to its first non-finite value, and whether any seed diverged (had one)."""
    out, diverged = [], False
    for c in curves:
        cut = next((k for k, (_, v) in enumerate(c) if not math.isfinite(v)), len(c))
        diverged |= cut < len(c)
        out.append(list(c[:cut]))
    return [c for c in out if c], diverged


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
    symbolic ones) are drawn thick; one legend below the panels; log (or symlog, for losses that go below 0,
    with plain tick labels) scale when the losses span decades. An optimizer that diverged is drawn up to where
    it did, its curve's end marked ``x``; one that diverged before its first logged step is named in the
    panel's title."""
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
        ends: list[tuple[float, float, Any]] = []  # where a diverged optimizer's mean curve stops
        never: list[str] = []  # diverged before its first logged step: nothing to draw but a note
        seeds = 0
        last_step = max((s for runs in by_opt.values() for c in runs for s, _ in c), default=0)
        for opt in sorted(by_opt, key=lambda o: list(styles).index(o) if o in styles else len(styles)):
            runs, diverged = finite_parts(by_opt[opt])
            st = styles.get(opt) or {"color": "k", "linewidth": 1.0, "linestyle": "-"}
            steps, mean, lo, hi = mean_ci(runs)
            if steps.size == 0:
                if diverged:
                    never.append(opt)
                    handles.setdefault(
                        opt, ax.plot([], [], marker="x", linestyle="none", color=st["color"])[0]
                    )
                continue
            seeds = max(seeds, len(by_opt[opt]))
            (line,) = ax.plot(steps, mean, label=opt, **st)
            handles.setdefault(opt, line)
            stopped = diverged or steps[-1] < last_step
            if stopped:
                ends.append((float(steps[-1]), float(mean[-1]), st["color"]))
            if len(runs) > 1:
                bands.append((opt, steps, lo, hi, st["color"]))
            if not stopped:  # a blow-up must not set the scale: the axes follow the runs that finished
                shown.extend(mean[np.isfinite(mean)].tolist())
        if not shown:  # every optimizer diverged: scale on what there is
            shown = [float(y) for _, y, _ in ends if math.isfinite(y)]
        scale = auto_yscale(ax, shown)
        if scale == "symlog":  # plain numbers (-1, 0, 1, 10, 100), not 10^x with a sign
            from matplotlib.ticker import FuncFormatter

            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if shown:  # keep a diverging optimizer's blow-up (or a wide band) from flattening everything else
            lo_q, hi_q = np.percentile(shown, [0.5, 99.0])
            if scale == "linear" and hi_q > lo_q:
                pad = 0.08 * (hi_q - lo_q)
                ax.set_ylim(lo_q - pad, hi_q + pad)
            elif scale == "log":
                ax.set_ylim(min(shown) / 1.5, max(shown) * 1.5)
            elif scale == "symlog":
                ax.set_ylim(min(shown) * 1.3 if min(shown) < 0 else 0.0, max(shown) * 1.5)
        _draw_bands(ax, bands, highlight, scale)
        top = ax.get_ylim()[1]
        for x, y, color in ends:  # marked, not dropped; one that blew past the top is marked on the edge
            ax.plot(
                [x],
                [min(y, top)],
                marker="x",
                markersize=9,
                markeredgewidth=2,
                color=color,
                linestyle="none",
                clip_on=False,
            )
        notes = [f"mean over {seeds} seed(s), 95% CI band"]
        if ends:
            notes.append(f"x: diverged ({len(ends)})")
        if never:
            notes.append(f"diverged at once: {', '.join(never)}")
        ax.set_title(f"{task}\n" + "; ".join(notes), fontsize=9)
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


@dataclass(frozen=True)
class TimelineTrial:
    """One trial on the suite's timeline: its stage, node, start and end (Unix seconds) and status."""

    stage: str
    node: str
    start: float
    end: float
    status: str = "ok"


def pack_lanes(trials: Sequence[TimelineTrial]) -> dict[str, list[tuple[int, TimelineTrial]]]:
    """Per node (sorted by name), its trials with a row each: the first row free at the trial's start, so
    trials that ran at once on one node sit on rows of their own (as many rows as ran there at once)."""
    by_node: dict[str, list[TimelineTrial]] = {}
    for t in sorted(trials, key=lambda t: (t.start, t.end, t.stage)):
        by_node.setdefault(t.node, []).append(t)
    out: dict[str, list[tuple[int, TimelineTrial]]] = {}
    for node in sorted(by_node):
        ends: list[float] = []  # per row, the end of its last trial
        placed = []
        for t in by_node[node]:
            row = next((i for i, e in enumerate(ends) if e <= t.start), len(ends))
            if row == len(ends):
                ends.append(t.end)
            else:
                ends[row] = t.end
            placed.append((row, t))
        out[node] = placed
    return out


def plot_timeline(trials: Sequence[TimelineTrial], path: str | Path, stages: Sequence[str] = ()) -> Path:
    """The suite's timeline: on top, each stage's span (its first trial's start to its last trial's end); below,
    one lane per node with a bar per trial (a row per trial running at once there), coloured by stage; a
    stopped trial hatched, an errored one outlined red. Time in seconds since the first trial started.
    ``stages``: the stage order of the legend and the top panel (default: by first start)."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    if not trials:
        raise ValueError("no trials to draw on a timeline")
    t0 = min(t.start for t in trials)
    first: dict[str, float] = {}
    for t in sorted(trials, key=lambda t: t.start):
        first.setdefault(t.stage, t.start)
    order = [s for s in stages if s in first] + sorted((s for s in first if s not in stages), key=lambda s: first[s])
    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    color = {s: cmap(i % cmap.N) for i, s in enumerate(order)}
    lanes = pack_lanes(trials)
    rows = {node: 1 + max(r for r, _ in placed) for node, placed in lanes.items()}
    n_rows = sum(rows.values())
    fig = Figure(figsize=(10, 1.2 + 0.28 * len(order) + 0.32 * n_rows + 0.3 * len(lanes)))
    grid = fig.add_gridspec(
        2, 1, height_ratios=[max(1, len(order)), max(2, n_rows + len(lanes))], hspace=0.08
    )
    top, ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    top.sharex(ax)
    for i, s in enumerate(order):
        mine = [t for t in trials if t.stage == s]
        lo, hi = min(t.start for t in mine) - t0, max(t.end for t in mine) - t0
        top.barh(i, hi - lo, left=lo, height=0.6, color=color[s])
        top.text(hi, i, f" {s} ({len(mine)} trial{'s' if len(mine) > 1 else ''}, {hi - lo:.0f} s)", va="center", fontsize=7)
    top.set_yticks(range(len(order)), order, fontsize=7)
    top.invert_yaxis()
    top.set_title("stages (first trial start to last trial end) and trials per node", fontsize=9)
    top.tick_params(labelbottom=False)
    y, ticks, labels = 0.0, [], []
    for node, placed in lanes.items():
        for row, t in placed:
            hatch = "///" if t.status == "stopped" else None
            edge, width = ("red", 1.8) if t.status == "error" else ("white", 0.6)
            ax.barh(
                y + row,
                max(t.end - t.start, 1e-3),
                left=t.start - t0,
                height=0.8,
                color=color[t.stage],
                hatch=hatch,
                edgecolor=edge,
                linewidth=width,
            )
        ticks.append(y + (rows[node] - 1) / 2)
        labels.append(f"{node}\n({len(placed)} trial{'s' if len(placed) > 1 else ''})")
        y += rows[node] + 1
        ax.axhline(y - 1, color="#ccc", linewidth=0.6)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_ylim(y - 1, -1)
    ax.set_xlabel("seconds since the first trial started")
    handles = [Patch(color=color[s], label=s) for s in order]
    if any(t.status == "stopped" for t in trials):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="stopped early"))
    if any(t.status == "error" for t in trials):
        handles.append(Patch(facecolor="white", edgecolor="red", label="errored"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, path)
