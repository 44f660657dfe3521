"""Paired comparisons of optimizers over seeds: mean difference, a bootstrap 95% CI, and a verdict.

Two optimizers trained from the same seeds share the problem instance, initialisation and batch order, so
their per-seed differences remove most of the seed-to-seed spread that makes means of a few seeds
unreliable. The CI comes from resampling those paired differences (percentile bootstrap, fixed RNG seed,
so the same numbers give the same CI); a CI that covers 0 is a tie, however the means are ordered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: bootstrap resamples (percentile CI)
N_BOOT = 2000
#: the CI's coverage
LEVEL = 0.95
#: differences within this fraction of the reference's mean magnitude are ties, whatever the CI says
#: (a rule and Adam written as an equation differ by float rounding, not in any way that matters)
REL_TOL = 1e-3


@dataclass(frozen=True)
class Paired:
    """``row - reference`` over the seeds both have: mean, CI bounds, pairs used and the verdict.

    ``verdict`` is ``better``, ``worse`` or ``tie`` for the row against the reference (for the metric's
    direction; a CI within :data:`REL_TOL` of the reference's magnitude is a tie), ``worse`` when the row diverged on a seed the reference did not (and ``better`` in the
    reverse case), and ``n/a`` with fewer than 2 pairs.
    """

    diff: float
    low: float
    high: float
    n: int
    verdict: str


def paired(row: Mapping[str, float], ref: Mapping[str, float], mode: str = "min") -> Paired:
    """Compare per-seed values ``row`` and ``ref`` (seed -> metric; inf/-inf marks a diverged seed)."""
    seeds = sorted(set(row) & set(ref))
    bad_row = [s for s in seeds if not math.isfinite(row[s]) and math.isfinite(ref[s])]
    bad_ref = [s for s in seeds if math.isfinite(row[s]) and not math.isfinite(ref[s])]
    pairs = [s for s in seeds if math.isfinite(row[s]) and math.isfinite(ref[s])]
    d = np.array([row[s] - ref[s] for s in pairs], dtype=np.float64)
    if bad_row or bad_ref:
        verdict = (
            "worse" if len(bad_row) > len(bad_ref) else "better" if len(bad_ref) > len(bad_row) else "tie"
        )
        mean = float(d.mean()) if len(d) else math.nan
        return Paired(mean, math.nan, math.nan, len(pairs), verdict + " (diverged)")
    if len(d) < 2:
        return Paired(float(d.mean()) if len(d) else math.nan, math.nan, math.nan, len(d), "n/a")
    rng = np.random.default_rng(0)
    boots = d[rng.integers(0, len(d), size=(N_BOOT, len(d)))].mean(axis=1)
    alpha = (1 - LEVEL) / 2
    low, high = (float(x) for x in np.quantile(boots, [alpha, 1 - alpha]))
    lower_is_better = mode == "min"
    scale = float(np.mean([abs(ref[s]) for s in pairs]))
    if max(abs(low), abs(high)) <= REL_TOL * scale:
        verdict = "tie"
    elif (high < 0) if lower_is_better else (low > 0):
        verdict = "better"
    elif (low > 0) if lower_is_better else (high < 0):
        verdict = "worse"
    else:
        verdict = "tie"
    return Paired(float(d.mean()), low, high, len(d), verdict)
