"""One hpo proposal's figure: train the target with the proposed config on each tuning seed, with a
validation split held out of the training data, and average the objective (never the test split)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.stages.meta_tune.common import DIVERGED_PENALTY, run_training, with_val_split

#: what an hpo search may minimise: the validation loss at the end of training (the default), or the final
#: training loss (the mean of the last minibatch losses, as evaluate trials record it)
OBJECTIVES = ("val_loss", "final_train_loss")


def tuning_target(optimizee: Mapping[str, Any], val_fraction: float) -> dict[str, Any]:
    """The optimizee spec a search trains on: its ``val_fraction`` of the training examples held out."""
    return with_val_split(optimizee, val_fraction)


def evaluate_config(
    config: Mapping[str, Any],
    optimizee: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    objective: str = "val_loss",
    device: Any = "cpu",
    on_seed: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Train ``optimizee`` (with its validation split: :func:`tuning_target`) with ``config`` from each seed.

    Returns the means over seeds of ``val_loss``, ``val_acc`` (classifiers), ``final_train_loss``, the count
    of ``diverged`` runs, and ``objective``: the mean of the chosen metric, or :data:`DIVERGED_PENALTY` when
    any run diverged (finite, so a sampler ranks it last). ``on_seed(i, result)`` follows each run.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    runs = []
    for i, seed in enumerate(seeds):
        res = run_training(config, optimizee, int(seed), device=device, splits=("val",))
        runs.append(res)
        if on_seed is not None:
            on_seed(i, res)
    diverged = sum(bool(r["diverged"]) for r in runs)
    out: dict[str, float] = {"diverged": float(diverged)}
    for key in ("val_loss", "val_acc", "final_train_loss"):
        vals = [float(r[key]) for r in runs if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    value = out.get(objective, math.inf)
    out["objective"] = (
        DIVERGED_PENALTY if diverged or not math.isfinite(value) else min(value, DIVERGED_PENALTY)
    )
    return out
