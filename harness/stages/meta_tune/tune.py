"""The meta_tune stage's pure work (torch, optuna; no Ray, no MLflow): fit a symbolic rule's constants.

:func:`meta_tune` runs one method (:mod:`~harness.stages.meta_tune.gradient` or
:mod:`~harness.stages.meta_tune.optuna_search`) on the target with a validation split carved out of its
training data, measures the validation loss before and after, and keeps the tuned constants only when they
are no worse there; :func:`write_outputs` writes the tuned equation and the history. The test split never
drives a choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.jsonio import write_json
from harness.stages.meta_tune.common import run_training, with_schedule, with_val_split
from harness.stages.meta_tune.gradient import meta_tune_gradient
from harness.stages.meta_tune.optuna_search import meta_tune_optuna
from harness.stages.outputs import EQUATION_FILE, HISTORY_FILE
from harness.stages.problems import resolve_device
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import load_equation
from harness.symbolic.sr.offset import value_at_zero, zero_at_zero


# ---------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------
@dataclass
class MetaTuneResult:
    """A tuned equation, how it got there, and validation metrics before and after tuning.

    ``before``/``after`` are means over ``eval_seeds`` of :func:`run_training` with the initial / tuned constants
    on the tuning optimizee: ``val_loss`` (what the choice reads), ``val_acc`` (classifiers),
    ``final_train_loss``, ``diverged`` (count), and ``test_loss``/``test_acc`` only with ``test_metrics``.
    ``details`` is the method's own summary (Optuna: best value, trial counts, study name; gradient: empty)
    plus ``kept`` (``tuned`` | ``initial``) and the ``val_fraction`` used.
    """

    equation: Equation
    initial_equation: Equation
    method: str
    history: dict[str, Any] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat scalar metrics for trackers: ``val_loss_before``/``val_loss_after`` (mean validation loss: the
        selection criterion), ``val_loss_improvement`` (before - after), ``val_acc_*``, ``train_loss_*``,
        ``diverged_*``, ``kept_tuned``, ``test_loss_*``/``test_acc_*`` (only with ``test_metrics``; for
        information), and for Optuna ``best_value``/``start_value``/``n_trials``/``n_new_trials``."""
        out: dict[str, float] = {}
        names = {
            "val_loss": "val_loss",
            "val_acc": "val_acc",
            "final_train_loss": "train_loss",
            "diverged": "diverged",
            "test_loss": "test_loss",
            "test_acc": "test_acc",
        }
        for when, vals in (("before", self.before), ("after", self.after)):
            for key, name in names.items():
                if key in vals:
                    out[f"{name}_{when}"] = float(vals[key])
        if "val_loss_before" in out and "val_loss_after" in out:
            out["val_loss_improvement"] = out["val_loss_before"] - out["val_loss_after"]
        if "kept" in self.details:
            out["kept_tuned"] = float(self.details["kept"] == "tuned")
        for key in ("best_value", "start_value", "n_trials", "n_new_trials"):
            v = self.details.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = float(v)
        return out

    metrics = summary


def _mean_runs(
    equation: Equation,
    optimizee: Mapping[str, Any],
    seeds: Sequence[int],
    steps: int | None,
    device: str | torch.device,
    splits: Sequence[str],
) -> dict[str, float]:
    runs = [run_training(equation, optimizee, s, steps=steps, device=device, splits=splits) for s in seeds]
    out: dict[str, float] = {"diverged": float(sum(bool(r["diverged"]) for r in runs))}
    for key in ("val_loss", "val_acc", "final_train_loss", "test_loss", "test_acc"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def _keep_zero_at_zero(initial: Equation, tuned: Equation) -> tuple[Equation, float]:
    """A rule that was zero when its inputs are zero stays so: tuning a constant that cancels a hidden
    offset (``c*(h(x) + k)``, :mod:`harness.symbolic.sr.offset`) apart from the term it cancels would bring a
    drift back, so it is cancelled again. Returns the equation and the drift removed (0.0: none)."""
    if value_at_zero(initial) != 0.0:
        return tuned, 0.0
    drift = value_at_zero(tuned)
    if drift == 0.0 or not math.isfinite(drift):
        return tuned, 0.0
    fixed = zero_at_zero(tuned)
    if fixed is None:
        return tuned, 0.0
    prov = dict(tuned.provenance)
    if fixed.n_constants != tuned.n_constants:
        prov.pop("tie_groups", None)
    fixed.provenance = prov
    return fixed, drift


def meta_tune(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    method: str = "gradient",
    *,
    seed: int = 0,
    eval_seeds: Sequence[int] | None = None,
    eval_steps: int | None = None,
    device: str = "cpu",
    keep: str = "better",
    val_fraction: float | None = 0.1,
    test_metrics: bool = False,
    schedule: str | None = None,
    **method_kwargs: Any,
) -> MetaTuneResult:
    """Meta-tune ``equation`` on ``optimizee`` with ``method`` (``gradient`` | ``optuna``) and measure it.

    Tuning and selection hold out ``val_fraction`` of the training examples as the ``val`` split
    (:func:`~harness.stages.meta_tune.common.with_val_split`; None leaves the spec alone); later stages build
    their own optimizees, so this changes nothing they train. ``method_kwargs`` go to
    :func:`meta_tune_gradient` or :func:`meta_tune_optuna`. Before/after metrics train with the initial and
    the tuned equation on ``eval_seeds`` (default ``[seed]``; unseen seeds give an honest check) for
    ``eval_steps`` (default: the spec's budget). ``keep="better"`` returns the tuned equation only when its
    mean validation loss is no worse with no more diverged runs (``details["kept"]`` says which), ``"tuned"``
    always. ``test_metrics`` records the test split for information only. ``schedule`` (``constant`` |
    ``cosine``; None keeps the equation's) is the step-size schedule used to tune, select and evaluate.
    """
    if keep not in ("better", "tuned"):
        raise ValueError(f"keep must be 'better' or 'tuned', got {keep!r}")
    eq = with_schedule(load_equation(equation), schedule)
    dev = resolve_device(device)
    target = with_val_split(optimizee, val_fraction)
    if method == "gradient":
        tuned, history = meta_tune_gradient(eq, target, seed=seed, device=dev, **method_kwargs)
        summary: dict[str, Any] = {}
    elif method == "optuna":
        tuned, summary = meta_tune_optuna(eq, target, seed=seed, device=dev, **method_kwargs)
        history = {"trials": summary.get("trials", [])}
    else:
        raise ValueError(f"unknown meta-tuning method {method!r}; use 'gradient' or 'optuna'")
    return select_tuned(
        eq,
        tuned,
        target,
        method,
        summary,
        history,
        seeds=list(eval_seeds) if eval_seeds is not None else [seed],
        eval_steps=eval_steps,
        device=dev,
        keep=keep,
        test_metrics=test_metrics,
    )


def select_tuned(
    initial: Equation,
    tuned: Equation,
    target: Mapping[str, Any],
    method: str,
    summary: Mapping[str, Any],
    history: dict[str, Any],
    *,
    seeds: Sequence[int],
    eval_steps: int | None = None,
    device: str | torch.device = "cpu",
    keep: str = "better",
    test_metrics: bool = False,
) -> MetaTuneResult:
    """The keep-or-reject step after a search: measure ``initial`` and ``tuned`` on ``target`` (the optimizee
    with its ``val`` split) over ``seeds`` and keep the tuned equation only when it is no worse there (mean
    validation loss, no more diverged runs; ``keep="tuned"`` always keeps it). ``summary`` is the method's
    own summary (its ``trials`` list is left out of the details). Shared by :func:`meta_tune` and the stage's
    select step after a search run as Ray Tune trials."""
    if keep not in ("better", "tuned"):
        raise ValueError(f"keep must be 'better' or 'tuned', got {keep!r}")
    eq = initial
    tuned, drift = _keep_zero_at_zero(eq, tuned)
    splits = ("val", "test") if test_metrics else ("val",)
    before = _mean_runs(eq, target, seeds, eval_steps, device, splits)
    after = _mean_runs(tuned, target, seeds, eval_steps, device, splits)
    details = {k: v for k, v in summary.items() if k != "trials"}
    if drift:
        details["drift_cancelled"] = drift
    details["val_fraction"] = (target.get("kwargs") or {}).get("val_fraction")
    worse = after.get("diverged", 0.0) > before.get("diverged", 0.0) or after.get(
        "val_loss", math.inf
    ) > before.get("val_loss", math.inf)
    if keep == "better" and worse:
        details["kept"] = "initial"
        return MetaTuneResult(eq, eq, method, history, before, after, details)
    details["kept"] = "tuned"
    return MetaTuneResult(tuned, eq, method, history, before, after, details)


def write_outputs(result: MetaTuneResult, outdir: str | Path) -> dict[str, Path]:
    """Write ``equation.json`` (the tuned equation) and ``history.json`` (method, before/after, summary,
    history); returns the paths keyed by file name (the keys name the trial artifacts)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    eq_path = result.equation.save(outdir / EQUATION_FILE)
    tex_path = outdir / "equation.tex"
    tex_path.write_text(f"\\[ \\Delta x = {result.equation.latex()} \\]\n")
    doc = {
        "method": result.method,
        "equation_before": result.initial_equation.text,
        "equation_after": result.equation.text,
        "before": result.before,
        "after": result.after,
        "summary": result.summary(),
        "details": result.details,
        "history": result.history,
    }
    hist_path = write_json(outdir / HISTORY_FILE, doc)
    return {EQUATION_FILE: eq_path, HISTORY_FILE: hist_path, "equation.tex": tex_path}
