"""The report's plots draw PNGs from plain data; the report's readers find curriculum steps and tuned constants."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.plotting import auto_yscale
from harness.report.html import render_html, task_curves
from harness.report.plots import mean_ci, plot_loss_curves, plot_profile
from harness.stages.meta_train.report import curriculum_steps, plot_meta_train
from harness.stages.meta_tune.report import plot_meta_tune, tuned_constants
from harness.symbolic.lang import Equation
from harness.symbolic.plots import plot_update_rule, update_rule_variables


def _png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_mean_ci_is_a_t_interval_over_seeds() -> None:
    curves = [[(0, 1.0), (10, 2.0)], [(0, 3.0), (10, 2.0)], [(0, 2.0), (10, 2.0), (20, 9.0)]]
    steps, mean, lo, hi = mean_ci(curves)
    assert steps.tolist() == [0.0, 10.0] and mean.tolist() == [2.0, 2.0]
    assert math.isclose(hi[0] - mean[0], 4.302652729911275 * 1.0 / math.sqrt(3), rel_tol=1e-6)
    assert lo[1] == hi[1] == 2.0


def test_auto_yscale_picks_log_for_decades_and_symlog_for_a_loss_below_zero() -> None:
    from matplotlib.figure import Figure

    ax = Figure().add_subplot(1, 1, 1)
    assert auto_yscale(ax, [100.0, 1.0, 0.01]) == "log"
    assert auto_yscale(Figure().add_subplot(1, 1, 1), [90.0, 1.0, -1.5]) == "symlog"
    assert auto_yscale(Figure().add_subplot(1, 1, 1), [3.0, 1.0, 2.0]) == "linear"


def test_plots_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seeds = [
        [(s, float(10 * math.exp(-s / 10) + rng.normal(0, 0.1))) for s in range(0, 50, 5)] for _ in range(3)
    ]
    curves = {"p1": {"adam": seeds, "symbolic:x": seeds[:2]}, "mlp": {"adam": seeds}}
    _png(plot_loss_curves(curves, tmp_path / "loss.png", highlight=["symbolic:x"]))
    _png(
        plot_profile(
            {"p1": {"adam": 10.0, "sgd": 20.0}, "mlp": {"adam": math.inf, "sgd": 5.0}}, tmp_path / "p.png"
        )
    )
    run = {
        "label": "rp",
        "meta_loss": [(i, 10.0 / i) for i in range(1, 200)],
        "val_loss": [(i, 5.0 / i) for i in range(10, 200, 10)],
        "cl_steps": [(50, "advance", 40)],
        "curriculum": True,
    }
    _png(plot_meta_train([run], tmp_path / "mt.png"))
    tune = {"label": "t", "kept": "tuned", "before": {"test_loss": 2.0}, "after": {"test_loss": 1.0}}
    _png(
        plot_meta_tune(
            [{**tune, "initial": [0.1, -1.0], "tuned": [0.2, 1.0], "objective": [3, 2, math.nan]}],
            tmp_path / "t.png",
        )
    )


def test_update_rule_plot_ranks_the_inputs_the_equation_uses(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["g_0", "g_1", "m_hat_0"]
    X = rng.normal(size=(500, 3))
    eq = Equation.parse("-0.5*g_0 + 0.01*tanh(m_hat_0)")
    y = eq.evaluate(X, names) + rng.normal(0, 0.01, 500)
    assert update_rule_variables(eq, X, names) == ["g_0", "m_hat_0"]
    _png(plot_update_rule(eq, X, y, names, tmp_path / "rule.png"))
    # the most influential are chosen, then shown in column order (lag 0, 1, 2), not by influence
    names = ["g_hat_0", "g_hat_1", "g_hat_2", "m_hat_0"]
    X = rng.normal(size=(500, 4))
    eq = Equation.parse("-0.5*g_hat_0 - 0.2*g_hat_1 - 0.4*g_hat_2 + 0.001*m_hat_0")  # influence: 0, 2, 1
    assert update_rule_variables(eq, X, names, max_vars=3) == ["g_hat_0", "g_hat_1", "g_hat_2"]


def test_curriculum_steps_and_tuned_constants_from_history_files() -> None:
    hist = [
        {"episode": 1, "cl_stage": 0, "episode_length": 20},
        {"episode": 2, "cl_stage": 0, "cl_event": "wait", "episode_length": 20},
        {"episode": 4, "cl_stage": 1, "cl_event": "advance", "episode_length": 20},
        {"episode": 5, "cl_stage": 1, "episode_length": 40},
        {"episode": 6, "cl_stage": 1, "cl_event": "done", "episode_length": 40},
        {"episode": 8, "cl_stage": 1, "cl_event": "done", "episode_length": 40},
    ]
    doc = {"config": {"curriculum": True, "cl_lengths": [20, 40]}, "history": hist}
    assert curriculum_steps(doc) == [(4, "advance", 40), (6, "done", 40)]
    assert curriculum_steps({"config": {"curriculum": False}, "history": hist}) == []

    initial = Equation.parse("0.5*g_0 + 2.0*m_hat_0")
    kept_initial = {"details": {"kept": "initial", "best_params": {"u0": math.log(2.0)}}}
    assert np.allclose(sorted(tuned_constants(kept_initial, initial)), sorted([1.0, 2.0]))
    kept = {"details": {"kept": "tuned"}, "equation_after": "0.25*g_0 + 3.0*m_hat_0"}
    assert sorted(tuned_constants(kept, initial)) == [0.25, 3.0]


def test_html_page_escapes_names_and_links_each_png(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from harness.stages.views import Panel as Plot

    run = SimpleNamespace(info=SimpleNamespace(run_id="abc"), data=SimpleNamespace(tags={"sl2o.metric": "m"}))
    rows = [
        {
            "suite": "s",
            "optimizee": "p<1>",
            "optimizer": "adam",
            "family": "adam",
            "metric": "m",
            "mode": "min",
            "mean": 1.0,
            "std": 0.1,
            "n": 3,
            "diverged": 0,
            "errored": 0,
            "rank": 1,
            "reference": "adam",
            "verdict": "reference",
            "diff": 0.0,
            "ci_low": math.nan,
            "ci_high": math.nan,
        }
    ]
    page = render_html(
        "s", run, rows, [{"optimizer": "adam", "rho@1": 1.0}], [Plot(tmp_path / "a.png", "A", "cap")]
    )
    assert "p&lt;1&gt;" in page and 'src="a.png"' in page and "<figcaption>cap</figcaption>" in page


def test_the_report_has_a_table_and_a_curve_panel_per_optimizee_and_horizon(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from harness.report.leaderboard import aggregate

    def rec(opt: str, horizon: str, seed: int, final: float) -> dict:
        return {
            "suite": "s",
            "optimizee": "mlp",
            "horizon": horizon,
            "optimizer": opt,
            "family": opt,
            "seed": seed,
            "status": "ok",
            "metric": "final_train_loss",
            "mode": "min",
            "metrics": {"final_train_loss": final},
            "curve": [(1, 5.0), (10, final)],
        }

    records = [
        rec(o, h, seed, f + 0.01 * seed)
        for h, finals in (("1500 steps", {"adam": 0.1, "sgd": 0.3}), ("300 steps", {"adam": 0.9, "sgd": 0.5}))
        for o, f in finals.items()
        for seed in (0, 1)
    ]
    curves = task_curves(records)
    assert list(curves) == ["mlp · 300 steps", "mlp · 1500 steps"]
    assert {o: len(c) for o, c in curves["mlp · 300 steps"].items()} == {"adam": 2, "sgd": 2}
    _png(plot_loss_curves(curves, tmp_path / "loss.png"))

    run = SimpleNamespace(info=SimpleNamespace(run_id="abc"), data=SimpleNamespace(tags={}))
    page = render_html("s", run, aggregate(records), [], [])
    short, long = page.index("<h3>mlp · 300 steps "), page.index("<h3>mlp · 1500 steps ")
    assert 0 < short < long and page.count("<h3>mlp") == 2
    # each table ranks its own horizon: sgd leads at 300 steps, adam at 1500 steps
    assert page.index("<td>sgd</td>", short) < page.index("<td>adam</td>", short) < long
    assert page.index("<td>adam</td>", long) < page.index("<td>sgd</td>", long)


def test_diverged_optimizers_are_marked_not_dropped(tmp_path: Path) -> None:
    from harness.report.plots import finite_parts

    ok = [[(s, 1.0 / (s + 1)) for s in range(0, 50, 5)] for _ in range(2)]
    blew = [[(0, 1.0), (5, 3.0), (10, math.inf)], [(0, 1.0), (5, 2.0), (10, 50.0), (15, math.nan)]]
    runs, diverged = finite_parts(blew)
    assert diverged and runs == [[(0, 1.0), (5, 3.0)], [(0, 1.0), (5, 2.0), (10, 50.0)]]
    assert finite_parts(ok) == (ok, False)
    assert finite_parts([[(0, math.inf)]]) == (
        [],
        True,
    )  # diverged before its first point: named in the title
    curves = {"p1": {"adam": ok, "sgd(lr=10)": blew, "sgd(lr=100)": [[(0, math.inf)]]}}
    _png(plot_loss_curves(curves, tmp_path / "div.png"))


def test_constants_are_named_by_the_term_they_multiply() -> None:
    from harness.stages.meta_tune.report import constant_terms

    eq = Equation.parse("0.5*m_hat_0 + -1.5 + 0.1*tanh(g_0/2.0)")
    assert eq.template == "c0*m_hat_0 + c1*tanh(g_0/c2) + c3"  # constants in print order
    assert constant_terms(eq) == ["c0·m_hat_0", "c1·tanh(g_0/c2)", "g_0/c2", "c3 (offset)"]


def test_the_timeline_packs_concurrent_trials_into_rows_per_node(tmp_path: Path) -> None:
    from harness.report.plots import TimelineTrial, pack_lanes, plot_timeline

    t = [
        TimelineTrial("grid", "10.0.0.2", 100.0, 110.0),
        TimelineTrial("grid", "10.0.0.2", 101.0, 104.0, "stopped"),
        TimelineTrial("teacher", "10.0.0.2", 104.0, 120.0),  # row 1 is free again at 104
        TimelineTrial("grid", "10.0.0.1", 100.5, 108.0, "error"),
        TimelineTrial("distill", "10.0.0.1", 108.0, 115.0),  # starts as the one before it ends: same row
        TimelineTrial("distill", "10.0.0.1", 109.0, 111.0),
    ]
    lanes = pack_lanes(t)
    assert list(lanes) == ["10.0.0.1", "10.0.0.2"]
    assert [(row, x.stage, x.start) for row, x in lanes["10.0.0.2"]] == [
        (0, "grid", 100.0),
        (1, "grid", 101.0),
        (1, "teacher", 104.0),
    ]
    assert [row for row, _ in lanes["10.0.0.1"]] == [0, 0, 1]
    _png(plot_timeline(t, tmp_path / "timeline.png"))
    with pytest.raises(ValueError, match="no trials"):
        plot_timeline([], tmp_path / "none.png")
