"""benchmarks/perf/transfer.py's arithmetic: the grid's best per horizon in hindsight, the rule's ratio."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[2] / "benchmarks" / "perf"


@pytest.fixture(scope="module")
def transfer():
    spec = importlib.util.spec_from_file_location("transfer_script", PERF / "transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(opt: str, horizon: str, seed: int, loss: float, acc: float, status: str = "ok") -> dict:
    return {
        "optimizer": opt,
        "horizon": horizon,
        "seed": str(seed),
        "status": status,
        "final_train_loss": loss,
        "test_acc": acc,
    }


def test_compare_per_horizon(transfer) -> None:
    grid = [
        _rec("adam", "100 steps", 0, 0.3, 0.90),
        _rec("adam", "100 steps", 1, 0.5, 0.92),
        _rec("sgd", "100 steps", 0, 0.2, 0.80),
        _rec("sgd", "100 steps", 1, 0.2, 0.82),
        # at 500 steps sgd diverged on one seed: it cannot be the best config, whatever its other seed did
        _rec("adam", "500 steps", 0, 0.1, 0.95),
        _rec("adam", "500 steps", 1, 0.1, 0.97),
        _rec("sgd", "500 steps", 0, 0.01, 0.99),
        _rec("sgd", "500 steps", 1, math.inf, 0.1, "diverged"),
    ]
    rule = [
        _rec("rule", "100 steps", 0, 0.1, 0.91),
        _rec("rule", "100 steps", 1, 0.3, 0.90),
        _rec("rule", "500 steps", 0, 0.12, 0.96),
        _rec("rule", "500 steps", 1, 0.12, 0.96),
    ]
    rows = transfer.compare(grid, rule, "-0.01*m_hat_0")
    assert [r["horizon"] for r in rows] == ["100 steps", "500 steps"]
    short, long = rows
    assert short["best_grid_config"] == "sgd" and short["best_grid_loss"] == pytest.approx(0.2)
    assert short["ratio"] == pytest.approx(1.0) and short["best_grid_test_acc"] == pytest.approx(0.91)
    assert long["best_grid_config"] == "adam" and long["ratio"] == pytest.approx(1.2)
    assert long["symbolic_test_acc"] == pytest.approx(0.96) and long["equation"] == "-0.01*m_hat_0"
    with pytest.raises(ValueError, match="several optimizers"):
        transfer.compare(grid, rule + [_rec("other", "100 steps", 0, 1.0, 0.5)], "x")


def test_horizons_sort_by_steps(transfer) -> None:
    assert sorted(["1500 steps", "300 steps", "20 epochs"], key=transfer._horizon_steps) == [
        "20 epochs",
        "300 steps",
        "1500 steps",
    ]


def test_a_scheduled_rule_is_printed_with_its_schedule(transfer) -> None:
    from harness.stages.meta_tune.common import with_schedule
    from harness.symbolic.families import sgd_equation

    eq = sgd_equation(0.1)
    assert transfer.rule_text(eq) == eq.text
    text = transfer.rule_text(with_schedule(eq, "cosine"))
    assert text.startswith(eq.text) and "cosine schedule over the run: 0.5*(1+cos(pi*t/T))" in text


def _at(train_losses: tuple[float, float], accs: tuple[float, float]) -> dict:
    return {
        h: {"train_loss": loss, "val_acc": acc}
        for h, loss, acc in zip(("100 steps", "500 steps"), train_losses, accs, strict=True)
    }


def test_the_rule_is_chosen_by_train_loss_among_rules_that_generalise(transfer) -> None:
    """Validation runs only: the lowest train loss wins unless its validation accuracy trails the best rule's
    by more than a point (then the next one does)."""
    cands = {
        "fast-but-overfits": _at((0.01, 0.001), (0.970, 0.99)),
        "fast": _at((0.02, 0.002), (0.985, 0.99)),
        "slow": _at((0.05, 0.005), (0.990, 0.99)),
    }
    assert transfer.pick_rule(cands) == "fast"
    cands["fast-but-overfits"]["100 steps"]["val_acc"] = (
        0.981  # within a point of the best (0.990): it may win
    )
    assert transfer.pick_rule(cands) == "fast-but-overfits"
    # not a classifier: train loss alone
    assert (
        transfer.pick_rule({"a": {"1 steps": {"train_loss": 0.3}}, "b": {"1 steps": {"train_loss": 0.2}}})
        == "b"
    )
    with pytest.raises(ValueError, match="no candidate"):
        transfer.pick_rule({})


def test_the_rule_must_hold_up_at_every_horizon(transfer) -> None:
    """A rule that wins the tuning horizon but stalls at 5x it, or generalises worse there, is not chosen;
    losses count by their ratio to each horizon's best, so the long horizon's small losses weigh as much."""
    cands = {
        "stalls": _at((0.010, 0.020), (0.99, 0.99)),  # best at 100 steps, 20x the best at 500
        "steady": _at((0.015, 0.001), (0.99, 0.99)),
    }
    assert transfer.pick_rule(cands) == "steady"
    cands["steady"]["500 steps"]["val_acc"] = 0.975  # generalises worse at 500 steps: out
    assert transfer.pick_rule(cands) == "stalls"
    cands["diverges"] = _at((0.001, math.inf), (0.99, 0.0))  # never chosen while another rule trains
    assert transfer.pick_rule(cands) == "stalls"


def _tuned_stage(tmp_path: Path, name: str, n_seeds: int):
    """A finished meta_tune stage with one trial per seed, each with its own equation file."""
    from harness.stages.outputs import EQUATION_FILE, StageOutcome, TrialOutput, tag
    from harness.symbolic.lang import Equation

    trials = []
    for seed in range(n_seeds):
        art = tmp_path / f"{name}-{seed}"
        art.mkdir()
        Equation.parse(f"-{seed + 1}*g_0").save(art / EQUATION_FILE)
        trials.append(TrialOutput(f"run{seed}", {}, {tag("seed"): str(seed)}, {}, art))
    return StageOutcome(name, "meta_tune", "key", "run", False, trials)


def test_each_rule_of_a_stage_of_several_is_its_own_candidate(transfer, tmp_path: Path) -> None:
    """A stage that tuned one rule per seed offers each one, and the chosen rule's equation and evaluate name
    are that trial's own (not the stage's first)."""
    from types import SimpleNamespace as NS

    stages = {
        "one": _tuned_stage(tmp_path, "one", 1),
        "seeds": _tuned_stage(tmp_path, "seeds", 2),
    }
    suite = NS(
        stages=[
            NS(kind="meta_tune", name="one"),
            NS(kind="meta_tune", name="seeds"),
            NS(
                kind="evaluate",
                name="rules",
                optimizers=[NS(from_stage="one", name="a"), NS(from_stage="seeds", name="b")],
            ),
        ]
    )
    outcome = NS(stages=stages)
    assert set(transfer._tuned_rules(suite, outcome)) == {"one", "seeds-s0", "seeds-s1"}
    cands = {"one": _at((0.5, 0.5), (0.9, 0.9)), "seeds-s0": _at((0.4, 0.4), (0.9, 0.9))}
    cands["seeds-s1"] = _at((0.2, 0.2), (0.9, 0.9))
    key, name, text = transfer.chosen_rule(suite, outcome, cands)
    assert (key, name) == ("seeds-s1", "b-s1") and text.startswith("-2")
