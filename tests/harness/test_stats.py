"""Paired, seed-matched comparisons: a consistent gap is a verdict, noise is a tie."""

from __future__ import annotations

import math

import pytest

from harness.report.leaderboard import aggregate, to_rich_tables
from harness.report.stats import paired


def _seeds(values: list[float]) -> dict[str, float]:
    return {str(i): v for i, v in enumerate(values)}


def test_a_consistent_gap_is_better_or_worse() -> None:
    ref = _seeds([1.0, 2.0, 0.5, 3.0, 1.5])  # large spread between seeds ...
    row = _seeds([v - 0.1 + 0.01 * i for i, v in enumerate(ref.values())])  # ... but always ~0.1 lower
    p = paired(row, ref)
    assert p.verdict == "better" and p.high < 0 and p.n == 5 and p.diff == pytest.approx(-0.08)
    assert paired(ref, row).verdict == "worse"
    assert paired(row, ref, mode="max").verdict == "worse"  # for a max metric lower is worse


def test_noise_is_a_tie_even_when_the_means_differ() -> None:
    ref = _seeds([1.0, 2.0, 0.5, 3.0, 1.5])
    row = _seeds([1.5, 1.2, 0.9, 2.1, 1.9])  # mean lower by 0.18, differences of both signs
    p = paired(row, ref)
    assert p.diff < 0 and p.low < 0 < p.high and p.verdict == "tie"


def test_divergence_and_too_few_pairs() -> None:
    ref = _seeds([1.0, 2.0, 3.0])
    assert paired(_seeds([0.5, math.inf, 0.5]), ref).verdict == "worse (diverged)"
    assert paired(ref, _seeds([0.5, math.inf, 0.5])).verdict == "better (diverged)"
    assert paired({"0": 1.0}, {"0": 2.0}).verdict == "n/a"


def _rec(opt: str, seed: int, value: float) -> dict:
    return {
        "suite": "s",
        "stage": "e",
        "optimizee": "p1",
        "optimizer": opt,
        "family": opt.split("(")[0],
        "seed": seed,
        "status": "ok",
        "metric": "final_train_loss",
        "mode": "min",
        "metrics": {"final_train_loss": value},
        "run_id": f"{opt}{seed}",
    }


def test_leaderboard_rows_are_compared_with_the_best_adam() -> None:
    base = [1.0, 2.0, 0.5, 3.0, 1.5]
    recs = [_rec("adam(lr=0.01)", s, v) for s, v in enumerate(base)]
    recs += [_rec("adam(lr=0.001)", s, v + 0.5) for s, v in enumerate(base)]
    recs += [_rec("symbolic:eq", s, v - 0.2 + 0.01 * s) for s, v in enumerate(base)]
    recs += [_rec("sgd(lr=0.1)", s, v + (0.3 if s % 2 else -0.3)) for s, v in enumerate(base)]
    rows = {r["optimizer"]: r for r in aggregate(recs)}
    assert {r["reference"] for r in rows.values()} == {"adam(lr=0.01)"}
    assert rows["adam(lr=0.01)"]["verdict"] == "reference"
    assert rows["symbolic:eq"]["verdict"] == "better" and rows["adam(lr=0.001)"]["verdict"] == "worse"
    assert rows["sgd(lr=0.1)"]["verdict"] == "tie"
    (table,) = to_rich_tables(list(rows.values()))
    assert any("verdict" in str(c.header) for c in table.columns)


def test_a_difference_of_float_rounding_is_a_tie() -> None:
    ref = _seeds([14.6, 2.0, 27.3])
    row = _seeds([v + 3.7e-6 + 1e-7 * i for i, v in enumerate(ref.values())])  # consistent but negligible
    assert paired(row, ref).verdict == "tie"
