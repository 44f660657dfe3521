"""Symbolic regression of an SR dataset into a Pareto front of raw-unit equations, and the choice among them.

:func:`distill` fits a backend on the scaled rows, maps each equation back to raw units, and scores it
(R², MSE, TPF on held-out rows); :func:`merge_and_choose` merges several trials' fronts and picks one.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.registry import SR_BACKENDS
from harness.stages.base import TrialContext
from harness.stages.collect.dataset import SRDataset, unscale_equation
from harness.stages.outputs import (
    BEST_FILE,
    CHOSEN_FILE,
    FRONT_FILE,
    MERGED_FRONT_FILE,
)
from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.metrics import fitted_complexity, mc, tpf
from harness.symbolic.sr.base import SRSettings
from harness.symbolic.sr.offset import is_zero_at_zero, value_at_zero, zero_at_zero, zero_tolerance
from harness.symbolic.sr.refit import fit_constants

__all__ = [
    "DEFAULT_MC_THRESHOLD",
    "BackendUnavailableError",
    "choose",
    "distill",
    "front_summary",
    "merge_and_choose",
    "write_outputs",
]

#: MC threshold on held-out ``1 - R²``: the simplest equation within 0.01 of the best
DEFAULT_MC_THRESHOLD = 0.01


class BackendUnavailableError(RuntimeError):
    """The requested SR backend cannot run here; the message says why and what to do."""


def _settings(settings: Any, seed: int) -> Any:
    """An ``SRSettings`` copy with ``seed`` set (a dict is validated by ``SRSettings.from_dict``)."""
    if isinstance(settings, SRSettings):
        data = settings.to_dict()
    elif isinstance(settings, Mapping):
        data = dict(settings)
    elif settings is None:
        data = {}
    else:
        raise TypeError(f"settings must be SRSettings or a dict, got {type(settings).__name__}")
    data["seed"] = int(seed)
    return SRSettings.from_dict(data)


def distill(
    dataset: SRDataset,
    backend: str,
    settings: Any = None,
    seed: int = 0,
    *,
    mc_threshold: float = DEFAULT_MC_THRESHOLD,
    progress: TrialContext | None = None,
) -> ParetoFront:
    """Fit ``backend`` on ``dataset`` and return the front of RAW equations (see module docstring).

    Args:
        dataset: the collected data (scaled, with its scales).
        backend: a name in :data:`harness.registry.SR_BACKENDS` (``operon``, ``pysr``, ``linear``, ...).
        settings: ``SRSettings`` or a dict of its fields; ``seed`` overrides its seed.
        seed: the SR seed.
        mc_threshold: threshold of the front's MC (held-out ``1 - R²``).
        progress: gets steps 0, generations (a fit with ``on_generation``), ``iterations``, +1 per equation.
    Raises:
        UnknownNameError: ``backend`` is not registered (the message lists the known ones).
        BackendUnavailableError: the backend reports it cannot run here (with its reason).
    """
    sr = SR_BACKENDS.get(backend)()
    ok, why = sr.available()
    if not ok:
        raise BackendUnavailableError(f"SR backend {backend!r} is unavailable: {why}")
    cfg = _settings(settings, seed)
    gens, r2_key = max(int(cfg.iterations), 1), "r2_val" if dataset.n_val >= 2 else "r2_train"
    now = {"fit_r2": math.nan, "scored": 0.0, "best_r2": math.nan}  # R² of the fit (scaled); raw, held out

    def report(step: int, total: int, **values: float) -> None:
        now.update(values)
        if progress is not None:
            progress.set_total(total)
            progress.progress(step, **now)

    hook = progress is not None and "on_generation" in inspect.signature(sr.fit).parameters
    fit_kw = {"on_generation": lambda g, r2: report(min(int(g), gens), gens, fit_r2=r2)} if hook else {}
    report(0, gens)  # the fit starts
    t0 = time.perf_counter()
    front = sr.fit(dataset.X_train, dataset.y_train, dataset.names, cfg, **fit_kw)
    fit_s = time.perf_counter() - t0
    now["fit_r2"] = float(np.fmax.reduce([now["fit_r2"], *(e.metrics["r2_train"] for e in front)]))
    Xt_raw, yt_raw = dataset.raw("train")
    Xv_raw, yv_raw = dataset.raw("val")
    has_val = dataset.n_val >= 2
    spec = dict(dataset.feature_spec)
    equations: list[Equation] = []
    skipped: list[str] = []
    varying = target_varying_fraction(yv_raw if has_val else yt_raw)
    for i, eq in enumerate(front):
        report(gens + i, gens + len(front), scored=i)  # the fit's end (i = 0), then i equations scored
        scaled = eq.score(dataset.X_val, dataset.y_val, dataset.names, "val") if has_val else eq
        try:
            raw = _to_raw(scaled, dataset, Xt_raw, yt_raw, anchor_zero=not cfg.allow_offset)
        except (ValueError, KeyError, OverflowError) as exc:  # e.g. a constant overflows when unscaled
            skipped.append(f"{scaled.text}: {exc}")
            continue
        if not cfg.allow_offset and value_at_zero(raw) != 0.0:  # a cancelled constant, off by rounding
            exact = zero_at_zero(raw)
            if exact is None or not is_zero_at_zero(exact, zero_tolerance(yt_raw)):
                skipped.append(f"{scaled.text}: not zero at zero once unscaled ({value_at_zero(raw)})")
                continue
            raw = exact
        raw = raw.score(Xt_raw, yt_raw, dataset.names, "train")
        if has_val:
            raw = raw.score(Xv_raw, yv_raw, dataset.names, "val")
        extra = {f"{k}_scaled": v for k, v in scaled.metrics.items() if k.startswith(("r2_", "mse_"))}
        extra.update({k: v for k, v in scaled.metrics.items() if not k.startswith(("r2_", "mse_"))})
        extra["complexity_scaled"] = float(scaled.complexity)
        extra["input_dependent_fraction"] = max(0.0, float(raw.metrics.get(r2_key, 0.0))) * varying
        try:
            result = tpf(raw, Xv_raw if has_val else Xt_raw, dataset.names)
        except (RuntimeError, ValueError, TypeError):  # an operator without a torch derivative
            extra["tpf"] = math.nan
        else:
            extra["tpf"] = result.overall
            extra.update({f"tpf_{f}": v for f, v in result.per_feature.items()})
        raw = raw.with_metrics(**extra)
        raw.provenance = {
            **dict(eq.provenance),
            "backend": backend,
            "seed": int(seed),
            "feature_spec": spec,
            "source": dict(dataset.source),
            "scaled_expression": scaled.text,
            "scales": "raw",
        }
        equations.append(raw)
        now["best_r2"] = float(np.fmax(now["best_r2"], raw.metrics.get(r2_key, math.nan)))
    report(gens + len(front), gens + len(front), scored=len(front))
    prov = {
        **{k: v for k, v in front.provenance.items() if k not in ("settings",)},
        "backend": backend,
        "seed": int(seed),
        "settings": cfg.to_dict(),
        "feature_spec": spec,
        "source": dict(dataset.source),
        "n_train": dataset.n_train,
        "n_val": dataset.n_val,
        "names": list(dataset.names),
        "fit_s": fit_s,
        "mc_threshold": float(mc_threshold),
        "split": "val" if has_val else "train",
        "skipped": len(skipped),
        "target_varying_fraction": varying,
    }
    if skipped:
        warnings.warn(
            f"distill: left out {len(skipped)} equation(s) that could not be unscaled, e.g. {skipped[0]}",
            stacklevel=2,
        )
    out = ParetoFront(equations, prov)
    if equations:
        try:
            out.provenance["mc"] = mc(out, mc_threshold)
        except ValueError:
            out.provenance["mc"] = None
    return out


def target_varying_fraction(y: np.ndarray) -> float:
    """``Var(y) / mean(y**2)``: the share of the target's mean square that is not a constant offset.

    A teacher whose update barely depends on its inputs (one that did not learn, say) has a target close to
    a constant: this is then near 0, while an equation that fits the constant and the small wiggles can still
    show a high R². Each equation's ``input_dependent_fraction`` is ``max(R², 0)`` times this: the share of
    the target's mean square its inputs explain.
    """
    y = np.asarray(y, dtype=np.float64)
    power = float(np.mean(y**2)) if y.size else 0.0
    return float(np.var(y)) / power if power > 0 else 0.0


def choose(front: ParetoFront, how: str | int = "mc", *, threshold: float | None = None) -> Equation:
    """The equation to use from ``front``.

    Args:
        how: ``"mc"`` (default): the best equation at the front's MC, the smallest complexity whose
            held-out error is within ``threshold`` of the best; ``"best"``: the lowest held-out error
            (ties: the simplest); an int: the best equation of complexity at most that.
        threshold: MC threshold (default the front's ``mc_threshold`` or :data:`DEFAULT_MC_THRESHOLD`).
    """
    if not len(front):
        raise ValueError("cannot choose from an empty Pareto front")
    if isinstance(how, bool):
        raise TypeError("how must be 'mc', 'best' or an int complexity")
    if isinstance(how, (int, np.integer)):
        return front.at_complexity(int(how))
    if how == "best":
        return front.best()
    if how == "mc":
        thr = (
            threshold if threshold is not None else front.provenance.get("mc_threshold", DEFAULT_MC_THRESHOLD)
        )
        return front.at_complexity(mc(front, float(thr)))
    raise ValueError(f"how must be 'mc', 'best' or an int complexity, got {how!r}")


def front_summary(front: ParetoFront, how: str | int = "mc") -> dict[str, float]:
    """Scalar metrics of a distilled front for trackers: best and chosen held-out R², MC, TPF, size."""
    chosen = choose(front, how)
    best = front.best()
    out = {
        "n_equations": float(len(front)),
        "best_r2_val": best.metrics.get("r2_val", best.metrics.get("r2_train", math.nan)),
        "best_complexity": float(fitted_complexity(best)),
        "chosen_r2_val": chosen.metrics.get("r2_val", chosen.metrics.get("r2_train", math.nan)),
        "chosen_complexity": float(fitted_complexity(chosen)),
        "chosen_tpf": chosen.metrics.get("tpf", math.nan),
    }
    if front.provenance.get("mc") is not None:
        out["mc"] = float(front.provenance["mc"])
    if "fit_s" in front.provenance:
        out["fit_s"] = float(front.provenance["fit_s"])
    return out


def _mark_choice(front: ParetoFront, how: str | int, threshold: float | None = None) -> Equation:
    """:func:`choose`'s pick, with ``chosen_by`` (and the MC threshold) noted in its provenance."""
    chosen = choose(front, how, threshold=threshold).copy()
    chosen.provenance["chosen_by"] = how if isinstance(how, str) else f"complexity<={int(how)}"
    if how == "mc":
        thr = (
            threshold if threshold is not None else front.provenance.get("mc_threshold", DEFAULT_MC_THRESHOLD)
        )
        chosen.provenance["mc_threshold"] = float(thr)
    return chosen


def write_outputs(
    front: ParetoFront,
    outdir: str | Path,
    dataset: SRDataset | None = None,
    *,
    how: str | int = "mc",
    title: str | None = None,
) -> dict[str, Path]:
    """Write the distill artifacts into ``outdir``; return their paths keyed by file name.

    ``equations.json`` (the front), ``best.json`` (:func:`choose` with ``how``; its provenance notes
    ``chosen_by``), ``pareto.png`` (complexity vs held-out R², MC line) and ``tpf.png`` (TPF vs
    complexity, recomputed per feature on the raw held-out rows of ``dataset`` when given, else drawn
    from the ``tpf`` metrics :func:`distill` stored).
    """
    from harness.symbolic.plots import plot_pareto, plot_tpf, plot_tpf_from_metrics

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {FRONT_FILE: front.save(outdir / FRONT_FILE)}
    paths[BEST_FILE] = _mark_choice(front, how).save(outdir / BEST_FILE)
    label = str(front.provenance.get("backend", "front"))
    mc_c = front.provenance.get("mc")
    paths["pareto.png"] = plot_pareto(
        {label: front},
        outdir / "pareto.png",
        title=title,
        mc_complexity=int(mc_c) if mc_c is not None else None,
    )
    if dataset is not None:
        Xv, _ = dataset.raw("val") if dataset.n_val >= 2 else dataset.raw("train")
        paths["tpf.png"] = plot_tpf(
            {label: front}, Xv, outdir / "tpf.png", dataset.names, per_feature=True, title=title
        )
    else:
        paths["tpf.png"] = plot_tpf_from_metrics(front, outdir / "tpf.png")
    return paths


def merge_and_choose(
    fronts: Sequence[str | Path | ParetoFront],
    how: str | int = "mc",
    outdir: str | Path = ".",
    *,
    threshold: float | None = None,
) -> dict[str, Path]:
    """Merge several distill fronts (backend x seed x complexity trials of ONE dataset) and choose one.

    The merged front is the non-dominated union on held-out error (each equation keeps its own
    provenance: backend, seed, feature_spec); its provenance lists the merged fronts and its MC. Writes
    ``front.json``, ``chosen.json`` (:func:`choose` with ``how``), ``pareto.png`` (every input front and
    the merged one) and ``tpf.png`` (from the stored TPF metrics); returns paths keyed by file name.
    Fronts of different sources (teachers) are merged as asked, with a warning: they describe
    different rules.
    """
    from harness.symbolic.plots import plot_pareto, plot_tpf_from_metrics

    loaded = [f if isinstance(f, ParetoFront) else ParetoFront.load(f) for f in fronts]
    if not loaded:
        raise ValueError("merge_and_choose needs at least one front")
    sources = {json.dumps(e.provenance.get("source"), sort_keys=True, default=str) for f in loaded for e in f}
    if len(sources) > 1:
        warnings.warn(
            f"merging fronts of {len(sources)} different sources into one; choose per source instead",
            stacklevel=2,
        )
    thr = float(
        threshold if threshold is not None else loaded[0].provenance.get("mc_threshold", DEFAULT_MC_THRESHOLD)
    )
    merged = ParetoFront.from_equations([e for f in loaded for e in f])
    keys = ("backend", "seed", "n_train", "n_val", "fit_s")
    merged.provenance = {
        "merged": [
            {
                **{k: f.provenance.get(k) for k in keys},
                "max_complexity": (f.provenance.get("settings") or {}).get("max_complexity"),
            }
            for f in loaded
        ],
        "feature_spec": loaded[0].provenance.get("feature_spec"),
        "source": loaded[0].provenance.get("source"),
        "target_varying_fraction": loaded[0].provenance.get("target_varying_fraction"),
        "mc_threshold": thr,
    }
    if merged.equations:
        merged.provenance["mc"] = mc(merged, thr)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {MERGED_FRONT_FILE: merged.save(outdir / MERGED_FRONT_FILE)}
    chosen = _mark_choice(merged, how, thr)
    paths[CHOSEN_FILE] = chosen.save(outdir / CHOSEN_FILE)
    paths["chosen.tex"] = outdir / "chosen.tex"
    paths["chosen.tex"].write_text(f"\\[ \\Delta x = {chosen.latex()} \\]\n")
    labelled: dict[str, ParetoFront] = {}
    for i, f in enumerate(loaded):
        p = f.provenance
        label = f"{p.get('backend', 'front')} s{p.get('seed', '?')}"
        cmax = (p.get("settings") or {}).get("max_complexity")
        if cmax is not None:
            label += f" c<={cmax}"
        labelled[label if label not in labelled else f"{label} #{i}"] = f
    labelled["merged"] = merged
    mc_c = merged.provenance.get("mc")
    paths["pareto.png"] = plot_pareto(
        labelled,
        outdir / "pareto.png",
        title="merged Pareto front",
        mc_complexity=int(mc_c) if mc_c is not None else None,
    )
    paths["tpf.png"] = plot_tpf_from_metrics(merged, outdir / "tpf.png")
    return paths


def _to_raw(
    scaled: Equation, dataset: SRDataset, X_raw: np.ndarray, y_raw: np.ndarray, *, anchor_zero: bool
) -> Equation:
    """The raw-unit rule of an equation fit on scaled data. Substituting the scales
    (:func:`unscale_equation`) would split a tied constant (eq. 6's one gamma) into one per column, so a
    tied form is refit instead: the same expression, its constants least-squares fit on the raw data with
    the ties kept (the linear W's solved exactly for each gamma)."""
    tie = scaled.provenance.get("tie_groups")
    if not tie:
        return unscale_equation(scaled, dataset)
    raw = fit_constants(scaled, X_raw, y_raw, dataset.names, tie_groups=tie, anchor_zero=anchor_zero)
    raw.provenance = {**dict(scaled.provenance), "tie_groups": raw.provenance.get("tie_groups", tie)}
    return raw
