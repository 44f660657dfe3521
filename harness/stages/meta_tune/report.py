"""The meta_tune stage's panel in ``sl2o report``: loss before and after tuning, the tuned constants against
the initial ones, and the search's objective per trial."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from harness.plotting import auto_yscale, save_figure
from harness.stages.meta_tune.common import DIVERGED_PENALTY, constants_from_values
from harness.stages.outputs import HISTORY_FILE
from harness.stages.views import Panel, RunView, StageView, slug
from harness.symbolic.lang import Equation


def meta_tune_panels(view: StageView, out: Path) -> list[Panel]:
    """One figure of every tuned equation of the stage (its trials, or the stage run of a search run as
    Tune trials, whose history the stage run holds)."""
    trials = [e for t in view.trials if (e := _entry(view, t)) is not None]
    if not trials and view.run is not None:
        entry = _entry(view, view.run)
        if entry is not None:
            entry["label"] = f"{view.name}: Optuna over {len(entry.get('objective') or [])} Tune trials"
        trials = [] if entry is None else [entry]
    if not trials:
        return []
    return [
        Panel(
            plot_meta_tune(trials, out / f"meta_tune_{slug(view.name)}.png"),
            f"Meta-tuning ({view.name})",
            "Loss before and after tuning the equation's constants (mean over the evaluation seeds), the tuned "
            "constants against the initial ones (absolute values; 'kept initial' means the tuned ones were "
            "worse and were discarded), and the search's objective per trial.",
        )
    ]


def _entry(view: StageView, t: RunView) -> dict[str, Any] | None:
    """One run's meta-tuning record for the plot, from its ``history.json`` (None when it has none)."""
    hist_path = view.download(t.run_id, HISTORY_FILE)
    if hist_path is None:
        return None
    doc = json.loads(hist_path.read_text())
    details = doc.get("details") or {}
    entry: dict[str, Any] = {
        "label": f"{view.name}: {t.tag('source') or t.tag('method') or 'equation'} s{t.tag('seed', '?')}",
        "kept": details.get("kept", "tuned"),
        "before": doc.get("before") or {},
        "after": doc.get("after") or {},
    }
    try:
        initial = Equation.parse(doc["equation_before"])
        entry["initial"] = list(initial.constants)
        entry["tuned"] = tuned_constants(doc, initial)
        entry["terms"] = constant_terms(initial)
    except Exception:  # noqa: BLE001 - an unreadable equation leaves the constants panel empty
        pass
    hist = doc.get("history") or {}
    if hist.get("trials"):
        entry["objective"] = [objective_value(tr.get("value")) for tr in hist["trials"]]
        entry["objective_label"] = "Optuna objective (mean train loss)"
    elif hist.get("windows"):
        entry["objective"] = [w.get("val_loss", w.get("heldout_loss", math.nan)) for w in hist["windows"]]
        entry["objective_label"] = "validation loss per window"
        entry["objective_x"] = "window"
    return entry


def objective_value(value: Any) -> float:
    """A search trial's objective for the plot: NaN for a trial with none, inf for a diverged one (the
    objective's finite penalty, :data:`~harness.stages.meta_tune.common.DIVERGED_PENALTY`)."""
    if value is None:
        return math.nan
    return math.inf if float(value) >= DIVERGED_PENALTY else float(value)


def tuned_constants(doc: dict[str, Any], initial: Equation) -> list[float]:
    """The constants the tuning found (even when the stage kept the initial ones), from a meta_tune
    ``history.json``: the tuned equation, else Optuna's best parameters, else the last gradient window."""
    details = doc.get("details") or {}
    if details.get("kept", "tuned") == "tuned" and doc.get("equation_after"):
        return list(Equation.parse(doc["equation_after"]).constants)
    if details.get("best_params"):
        return constants_from_values(
            initial,
            details["best_params"],
            details.get("space", "log_multipliers"),
            float(details.get("radius", 10.0)),
        )
    windows = (doc.get("history") or {}).get("windows") or []
    if windows and windows[-1].get("constants"):
        return [float(c) for c in windows[-1]["constants"]]
    return list(initial.constants)


def constant_terms(eq: Equation, width: int = 18) -> list[str]:
    """A short label per constant ``c{j}`` of ``eq``, naming what it multiplies or divides: ``c5·m_hat_0``,
    ``c4·tanh(…)``, ``g_hat_0/c0``, ``c2 (offset)`` for a term of its own, plain ``c3`` otherwise (an exponent)."""
    import sympy

    from harness.symbolic.lang.names import const_symbol, is_const_symbol

    def short(factors: Sequence[Any]) -> str:
        text = str(sympy.Mul(*factors)).replace("**", "^").replace(" ", "")
        return text if len(text) <= width else text[: width - 1] + "…"

    symbols = [const_symbol(j) for j in range(len(eq.constants))]
    labels: dict[sympy.Symbol, str] = {}
    for node in sympy.preorder_traversal(eq.expr):
        for s in symbols:
            if s in labels:
                continue
            if isinstance(node, sympy.Add) and s in node.args:
                labels[s] = f"{s} (offset)"
            elif isinstance(node, sympy.Mul) and (s in node.args or s**-1 in node.args):
                factors = [a for a in node.args if not (a.is_Number or is_const_symbol(a) or a == s**-1)]
                if factors:
                    labels[s] = f"{s}·{short(factors)}" if s in node.args else f"{short(factors)}/{s}"
    return [labels.get(s, str(s)) for s in symbols]


def plot_meta_tune(trials: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Meta-tuning of each equation: held-out and train loss before/after, the tuned constants against the
    initial ones, and (Optuna) the objective per trial.

    Each trial is ``{"label", "kept", "before": {...}, "after": {...}, "initial": [c...], "tuned": [c...],
    "terms": [label per constant], "objective": [values]}`` (``before``/``after`` hold ``val_loss`` (meta_tune's selection criterion), ``final_train_loss``
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
            flips = np.sign(init) != np.sign(tuned)
            ax_c.bar(idx - 0.2, np.abs(init), 0.4, color="0.6", label="initial |c|")
            bars = ax_c.bar(idx + 0.2, np.abs(tuned), 0.4, color="tab:purple", label="tuned |c|")
            for bar, flipped_one in zip(bars, flips, strict=True):
                if flipped_one:  # the bars show magnitudes: a sign change is drawn, not hidden
                    bar.set_hatch("///")
                    bar.set_edgecolor("k")
            terms = list(tr.get("terms") or [f"c{j}" for j in idx])
            ax_c.set_xticks(idx, terms, fontsize=7, rotation=90 if init.size > 6 else 20, ha="right")
            auto_yscale(ax_c, np.concatenate([np.abs(init), np.abs(tuned)]))
            flipped = int(flips.sum())
            ax_c.set_title(
                "constants |c| by the term they multiply: initial vs tuned"
                + (f"\n(hatched: {flipped} changed sign)" if flipped else ""),
                fontsize=10,
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
