"""Plots write PNG files."""

from __future__ import annotations

import numpy as np

from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.metrics import mc
from harness.symbolic.plots import plot_pareto, plot_tpf, plot_tpf_from_metrics


def test_plots_write_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    X = {f"g_{i}": rng.normal(size=50) for i in range(3)} | {"m_hat_0": rng.normal(size=50)}
    front = ParetoFront(
        [
            Equation.parse("-0.01*g_0", metrics={"r2_train": 0.7}),
            Equation.parse("-0.01*g_0 + 0.5*g_2", metrics={"r2_train": 0.9}),
            Equation.parse("tanh(m_hat_0)*0.1 + 0.5*g_2 - 0.01*g_1", metrics={"r2_train": 0.95}),
        ]
    )
    p1 = plot_pareto(
        {"operon": front, "linear": front}, tmp_path / "a" / "pareto.png", mc_complexity=mc(front)
    )
    p2 = plot_tpf(front, X, tmp_path / "tpf.png", per_feature=True)
    stored = ParetoFront([e.with_metrics(tpf=float(i)) for i, e in enumerate(front)][:2] + [front[2]])
    p3 = plot_tpf_from_metrics(stored, tmp_path / "b" / "tpf.png")
    assert p3 == tmp_path / "b" / "tpf.png"
    for p in (p1, p2, p3):
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"
