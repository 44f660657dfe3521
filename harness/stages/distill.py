"""The distill stage: symbolic regression of an :class:`~harness.stages.collect.SRDataset` into a front.

A pure function (no Ray, no MLflow). :func:`distill` fits the backend on the SCALED training data (the
paper re-scales inputs to unit variance), then for every front equation:

* scores it on the scaled held-out rows (``r2_val_scaled``, ``mse_val_scaled``; plus the backend's
  ``r2_train_scaled``/``mse_train_scaled`` and ``complexity_scaled``, the complexity of the fitted form:
  what ``max_complexity`` bounds, and what the front, MC and a choice by complexity count, see
  :func:`harness.symbolic.metrics.fitted_complexity`);
* maps it back to RAW features and target (:func:`~harness.stages.collect.unscale_equation`) and
  scores that on raw data in float64: ``r2_train``, ``mse_train``, ``r2_val``, ``mse_val``. R² is
  invariant to the rescaling, so the two R² agree up to rounding; the MSEs are in raw units;
* measures TPF (sensitivity form, :func:`harness.symbolic.metrics.tpf`) on the raw held-out rows:
  ``tpf`` (overall) and ``tpf_<feature>`` per feature;
* records provenance: backend, seed, settings, source, the scaled expression, and ``feature_spec``
  (``FeatureSpec.to_dict()``), so a SymbolicOptimizer recomputes exactly the features it was fit on.

No gradient-free term unless the settings' ``allow_offset``: the backends return equations that are zero at
all-zero inputs (:mod:`harness.symbolic.sr.offset`); unscaling keeps that exactly for every term that
vanishes at zero by its form, and a compensating constant that the unscaling's rounding left a few ulps
off is re-adjusted (:func:`~harness.symbolic.sr.offset.zero_at_zero`), so each raw equation is zero at
zero too.

The returned front holds the raw equations, sorted by complexity (the backend's front, not re-pruned on
held-out error), with ``mc`` (the MC of the front on held-out error) in its provenance.
:func:`write_outputs` saves ``equations.json``, ``best.json`` (the :func:`choose` pick) and two PNGs;
:func:`merge_and_choose` merges the fronts of several trials (backend x seed x complexity) and chooses.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from harness.config.suite import StageBase, StageRef, Suite
from harness.registry import SR_BACKENDS
from harness.stages.base import StageKind, TrialContext, TrialModel, TrialResult, given, settings_model
from harness.stages.collect.dataset import SRDataset, unscale_equation
from harness.stages.outputs import (
    BEST_FILE,
    CHOSEN_FILE,
    DATASET_FILE,
    FRONT_FILE,
    MERGED_FRONT_FILE,
    StageOutcome,
    trial_files,
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


# ---------------------------------------------------------------------------------------------------
# the stage kind
# ---------------------------------------------------------------------------------------------------
#: the typed model of a distill stage's ``settings:`` (``SRSettings`` minus the grid's seed/complexity)
DistillSettings = settings_model("DistillSettings", SRSettings, what="SR", exclude=("seed", "max_complexity"))


class DistillStage(StageBase):
    """Symbolic regression over backend x seed x maximum complexity; fronts merged, one equation chosen."""

    kind: Literal["distill"]
    from_stage: str
    backends: list[str] = Field(default_factory=lambda: ["operon"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    max_complexities: list[int] = Field(default_factory=lambda: [20], min_length=1)
    settings: DistillSettings = Field(default_factory=DistillSettings)  # type: ignore[valid-type]
    choose: Literal["mc", "best"] | int = "mc"

    @field_validator("backends")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            SR_BACKENDS.get(name)
        return v

    @model_validator(mode="after")
    def _settings(self) -> DistillStage:
        SRSettings.from_dict(given(self.settings))  # the dataclass's own checks (operators, ranges)
        return self

    def inputs(self) -> list[StageRef]:
        return [(self.from_stage, ("collect",))]


class DistillTrial(TrialModel):
    """One SR fit: a backend, a seed and a maximum complexity on one source's dataset file."""

    backend: str
    source: str
    dataset: str
    seed: int
    max_complexity: int = Field(gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    choose: Literal["mc", "best"] | int = "mc"


class DistillKind(StageKind[DistillStage, DistillTrial]):
    """``distill``: Pareto fronts per trial, merged and chosen per source when the stage ends."""

    name = "distill"
    spec_model = DistillStage
    trial_model = DistillTrial
    outputs = (FRONT_FILE, BEST_FILE)
    metric = "best_r2_val"
    mode = "max"
    identity = ("backend", "source", "seed", "max_complexity")

    def plan(
        self, suite: Suite, spec: DistillStage, inputs: Mapping[str, StageOutcome]
    ) -> list[DistillTrial]:
        datasets = [(t.tag("source"), str(p)) for t, p in trial_files(inputs[spec.from_stage], DATASET_FILE)]
        if not datasets:
            raise ValueError(f"stage {spec.from_stage!r} produced no datasets; nothing to distill")
        settings = given(spec.settings)
        return [
            DistillTrial(
                backend=b,
                source=src,
                dataset=path,
                seed=seed,
                max_complexity=c,
                settings=settings,
                choose=spec.choose,
            )
            for b in spec.backends
            for seed in spec.seeds
            for c in spec.max_complexities
            for src, path in datasets
        ]

    def run(self, trial: DistillTrial, ctx: TrialContext) -> TrialResult:
        start = time.time()
        ds = SRDataset.load(trial.dataset)
        settings = {"threads": ctx.cpus, **trial.settings, "max_complexity": trial.max_complexity}
        front = distill(ds, trial.backend, settings, trial.seed, progress=ctx)
        if not len(front):
            raise ValueError(
                f"the {trial.backend} front holds no equation (left out: {front.provenance.get('left_out')}, "
                f"skipped: {front.provenance.get('skipped')}); raise max_complexity ({trial.max_complexity}) "
                "or the search budget"
            )
        files = write_outputs(front, ctx.outdir, ds, how=trial.choose)
        info = {}
        if ds.source.get("learned") is False:
            info["warning"] = (
                f"the dataset's source {ds.source.get('label', '?')!r} is a teacher that did not learn; "
                "its distilled rule describes its initial weights"
            )
        best = max((eq.metrics.get("r2_val", float("-inf")) for eq in front.equations), default=float("nan"))
        metrics = {
            "best_r2_val": float(best),
            "front_size": float(len(front.equations)),
            "seconds": time.time() - start,
        }
        return TrialResult(metrics, files=files, info=info)

    def finalize(
        self, spec: DistillStage, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]
    ) -> None:
        """Merge the trials' fronts per source (teacher) and choose the equation each goes on with."""
        by_source: dict[str, list[Path]] = {}
        for t, p in trial_files(outcome, FRONT_FILE):
            by_source.setdefault(t.tag("source", "source"), []).append(p)
        if not by_source:
            log(f"[{spec.name}] no fronts to merge (all trials failed?)")
            return
        chosen = {}
        for source, fronts in sorted(by_source.items()):
            sub = outdir / source if len(by_source) > 1 else outdir
            files = merge_and_choose(fronts, spec.choose, sub)
            chosen[source] = str(files[CHOSEN_FILE])
        outcome.extra["chosen"] = chosen

    def summary_lines(self, spec: DistillStage, outcome: StageOutcome) -> list[str]:
        lines = []
        for row in distill_rows([Path(p) for p in outcome.extra.get("chosen", {}).values()], spec.name):
            lines.append(f"{row['source']}: update = {row['equation']}")
            per = ", ".join(
                f"{k[4:]} {v:.3g}" for k, v in row.items() if k.startswith("tpf_") and v is not None
            )
            lines.append(
                f"    held-out R² {_fmt(row['r2_val'])}, complexity {row['complexity_scaled']} (as fitted; "
                f"{row['complexity']} as printed in raw units), MC {row['mc']}, TPF {_fmt(row['tpf'])}"
                + (f" ({per})" if per else "")
                + f", front of {row['front_size']}, input-dependent {_fmt(row['input_dependent_fraction'])}"
            )
            if not row["learned"]:
                lines.append("    WARNING: its teacher did not learn (see the meta_train summary)")
        return lines

    def trial_tags(self, trial: DistillTrial) -> dict[str, str]:
        return {
            "backend": trial.backend,
            "source": trial.source,
            "seed": str(trial.seed),
            "max_complexity": str(trial.max_complexity),
        }


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


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


def distill_rows(chosen_files: Sequence[Path], stage: str = "") -> list[dict[str, Any]]:
    """One row per source (teacher) of a finished distill stage: the paper's Table 3 columns.

    ``chosen_files`` are the stage's ``chosen.json`` files (one per source, each beside its merged
    ``front.json``). Columns: ``stage``, ``source``, ``equation`` (constants to 4 digits), ``complexity``
    (of the raw equation) and ``complexity_scaled`` (of the fitted form, what ``max_complexity`` bounds),
    ``r2_val``, ``tpf`` and ``tpf_<feature>``, ``mc``, ``front_size``, ``input_dependent_fraction`` (see
    :func:`target_varying_fraction`), ``target_varying_fraction`` and ``learned`` (False when the source is
    a teacher that did not learn).
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
