"""A distill trial reports progress while it runs: the fit's start and end, Operon's generations with the
best fit so far, and each front equation scored; the total makes the ETA mean something."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.stages.base import LocalContext
from harness.stages.collect import SRDataset, collect
from harness.stages.distill import DistillKind, DistillTrial, distill

KEYS = {"fit_r2", "scored", "best_r2"}


@pytest.fixture(scope="module")
def sgd_ds() -> SRDataset:
    return collect(
        {"rule": "sgd", "kwargs": {"lr": 0.01}}, [{"name": "quadratic_cos", "steps": 40}], n_samples=300
    )


def _check_curves(ctx: LocalContext) -> None:
    """Every report carries the same values (the runner pairs each curve with the steps by position)."""
    assert set(ctx.curves) == KEYS
    assert all(len(v) == len(ctx.steps) for v in ctx.curves.values())
    assert ctx.steps == sorted(ctx.steps)


def test_a_backend_without_generations_reports_the_phases_and_each_equation(sgd_ds: SRDataset) -> None:
    calls: list[tuple[int, int, dict[str, float]]] = []

    class Recorder(LocalContext):
        def progress(self, step: int, **values: float) -> None:
            calls.append((step, self.total or 0, values))

    front = distill(sgd_ds, "linear", {"max_complexity": 200, "iterations": 7}, progress=Recorder())
    n = len(front)
    assert n >= 1
    steps = [s for s, _, _ in calls]
    assert steps == [0, 7, *range(8, 7 + n + 1)]  # fit started, fit done, then one per equation
    assert [t for _, t, _ in calls] == [7] + [7 + n] * (n + 1)
    first, done, *scoring = [v for _, _, v in calls]
    assert math.isnan(first["fit_r2"]) and first["scored"] == 0 and math.isnan(first["best_r2"])
    assert done["fit_r2"] == pytest.approx(max(e.metrics["r2_train_scaled"] for e in front))
    assert [v["scored"] for v in scoring] == list(range(1, n + 1))
    assert scoring[-1]["best_r2"] == max(e.metrics["r2_val"] for e in front)


def test_an_operon_trial_reports_each_generation_and_sets_its_total(
    sgd_ds: SRDataset, tmp_path: Path
) -> None:
    pytest.importorskip("pyoperon")
    path = sgd_ds.save(tmp_path / "dataset.npz")
    gens = 6
    trial = DistillTrial(
        backend="operon",
        source="sgd",
        dataset=str(path),
        seed=1,
        max_complexity=10,
        settings={"operators": ["add", "mul"], "population_size": 40, "iterations": gens},
    )
    ctx = LocalContext(tmp_path / "out")
    result = DistillKind().run(trial, ctx)
    _check_curves(ctx)
    n = int(result.metrics["front_size"])
    assert ctx.total == gens + n
    # step 0 (fit started), generations 0..gens (Operon calls back after each), the fit's end, the equations
    assert ctx.steps == [0, *range(gens + 1), gens, *range(gens + 1, gens + n + 1)]
    fit_r2 = ctx.curves["fit_r2"]
    per_generation = fit_r2[1 : gens + 2]
    assert all(math.isfinite(v) for v in per_generation) and per_generation == sorted(per_generation)
    assert per_generation[-1] > 0.99  # the best fit so far, on an easy target
    assert ctx.curves["scored"][-1] == n
    assert ctx.curves["best_r2"][-1] == result.metrics["best_r2_val"]


def test_operon_progress_changes_nothing_in_the_search_and_leaves_pyoperon_as_it_was() -> None:
    sk = pytest.importorskip("pyoperon.sklearn")
    from harness.symbolic.sr.base import SRSettings
    from harness.symbolic.sr.operon import OperonBackend

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = 0.5 * X[:, 0] - 0.1 * np.tanh(X[:, 1])
    names = ["g_0", "g_1"]
    cfg = SRSettings.from_dict({"iterations": 8, "population_size": 40, "max_complexity": 12, "seed": 3})
    real = sk.op
    plain = OperonBackend().fit(X, y, names, cfg)
    seen: list[tuple[int, float]] = []
    hooked = OperonBackend().fit(X, y, names, cfg, on_generation=lambda g, r2: seen.append((g, r2)))
    assert sk.op is real
    assert [(e.text, e.constants) for e in hooked] == [(e.text, e.constants) for e in plain]
    assert [g for g, _ in seen] == list(range(9))

    def broken(generation: int, r2: float) -> None:
        raise RuntimeError("display gone")

    with pytest.warns(UserWarning, match="per-generation progress stopped"):
        again = OperonBackend().fit(X, y, names, cfg, on_generation=broken)
    assert [e.text for e in again] == [e.text for e in plain] and sk.op is real


def test_a_failing_fit_raises_on_the_calling_thread() -> None:
    from harness.symbolic.sr.operon import fit_reporting

    class Failing:
        def fit(self, X: np.ndarray, y: np.ndarray) -> None:
            raise ValueError("no data")

    with pytest.raises(ValueError, match="no data"):
        fit_reporting(Failing(), np.zeros((2, 1)), np.zeros(2), lambda g, r2: None)
