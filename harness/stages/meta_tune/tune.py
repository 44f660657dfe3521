"""The meta_tune stage: fit a symbolic rule's constants to a target optimizee, by gradient or by Optuna.

A pure module (torch, optuna; no Ray, no MLflow). :func:`meta_tune` runs one method
(:mod:`~harness.stages.meta_tune.gradient`: the paper's one-pass meta-fine-tuning by truncated unrolls;
:mod:`~harness.stages.meta_tune.optuna_search`: ask/tell over the constants) and measures the held-out
loss before and after; :func:`write_outputs` writes the tuned equation and the history.

Search spaces: ``log_multipliers`` (default) moves every constant slot ``c -> c * exp(u)``,
``u in [-log(r), log(r)]`` (sign and scale kept; zero constants stay zero), ``constants`` searches the values
themselves in ``[c/r, c*r]`` (log scale for positive, linear for negative, ``[-1, 1]`` for zero). Constants in
one ``provenance["tie_groups"]`` group (eq. 6's gamma) share one search variable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.jsonio import write_json
from harness.stages.meta_tune.common import run_training
from harness.stages.meta_tune.gradient import meta_tune_gradient
from harness.stages.meta_tune.optuna_search import meta_tune_optuna
from harness.stages.outputs import EQUATION_FILE, HISTORY_FILE
from harness.stages.problems import resolve_device
from harness.symbolic.equation import Equation
from harness.symbolic.optimizer import load_equation


# ---------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------
@dataclass
class MetaTuneResult:
    """A tuned equation, how it got there, and held-out metrics before and after tuning.

    ``before``/``after`` are means over ``eval_seeds`` of :func:`run_training` with the initial / tuned constants:
    ``test_loss`` (the held-out loss), ``final_train_loss``, ``test_acc`` (classifiers), ``diverged`` (count).
    ``details`` is the method's own summary (Optuna: best value, trial counts, study name; gradient: empty).
    """

    equation: Equation
    initial_equation: Equation
    method: str
    history: dict[str, Any] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat scalar metrics for trackers: ``heldout_before``/``heldout_after`` (mean test loss),
        ``heldout_improvement`` (before - after), ``train_loss_*``, ``test_acc_*``, ``diverged_*``, and for
        Optuna ``best_value``/``n_trials``."""
        out: dict[str, float] = {}
        names = {
            "test_loss": "heldout",
            "final_train_loss": "train_loss",
            "test_acc": "test_acc",
            "diverged": "diverged",
        }
        for when, vals in (("before", self.before), ("after", self.after)):
            for key, name in names.items():
                if key in vals:
                    out[f"{name}_{when}"] = float(vals[key])
        if "heldout_before" in out and "heldout_after" in out:
            out["heldout_improvement"] = out["heldout_before"] - out["heldout_after"]
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
) -> dict[str, float]:
    runs = [run_training(equation, optimizee, s, steps=steps, device=device) for s in seeds]
    out: dict[str, float] = {"diverged": float(sum(bool(r["diverged"]) for r in runs))}
    for key in ("test_loss", "final_train_loss", "test_acc"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


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
    **method_kwargs: Any,
) -> MetaTuneResult:
    """Meta-tune ``equation`` on ``optimizee`` with ``method`` (``gradient`` | ``optuna``) and measure it.

    ``method_kwargs`` go to :func:`meta_tune_gradient` or :func:`meta_tune_optuna`. Before/after metrics train
    the optimizee with the initial and the tuned equation on ``eval_seeds`` (default ``[seed]``; give seeds
    the tuning never saw for an honest check) for ``eval_steps`` (default: the spec's budget) and report the
    held-out (test) loss. With ``keep="better"`` (default) the result's equation is the tuned one only when
    it is no worse on those seeds, else the initial one (``details["kept"]`` says which); ``keep="tuned"``
    always returns the tuned equation.
    """
    if keep not in ("better", "tuned"):
        raise ValueError(f"keep must be 'better' or 'tuned', got {keep!r}")
    eq = load_equation(equation)
    dev = resolve_device(device)
    if method == "gradient":
        tuned, history = meta_tune_gradient(eq, optimizee, seed=seed, device=dev, **method_kwargs)
        summary: dict[str, Any] = {}
    elif method == "optuna":
        tuned, summary = meta_tune_optuna(eq, optimizee, seed=seed, device=dev, **method_kwargs)
        history = {"trials": summary.get("trials", [])}
    else:
        raise ValueError(f"unknown meta-tuning method {method!r}; use 'gradient' or 'optuna'")
    seeds = list(eval_seeds) if eval_seeds is not None else [seed]
    before = _mean_runs(eq, optimizee, seeds, eval_steps, dev)
    after = _mean_runs(tuned, optimizee, seeds, eval_steps, dev)
    details = {k: v for k, v in summary.items() if k != "trials"}
    worse = after.get("diverged", 0.0) > before.get("diverged", 0.0) or after.get(
        "test_loss", math.inf
    ) > before.get("test_loss", math.inf)
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
