"""What a run says it produced: the did-not-learn flag, the input-dependent fraction, Table 3 rows and
the per-kind summary lines (all without Ray)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.registry import STAGES
from harness.stages.base import LocalContext, run_local
from harness.stages.collect import collect
from harness.stages.distill import distill, distill_rows, merge_and_choose, target_varying_fraction
from harness.stages.meta_train import LEARN_MARGIN, MetaTrainOutcome, MetaTrainTrial
from harness.stages.outputs import StageOutcome, TrialOutput


def _outcome(initial: float, best: float) -> MetaTrainOutcome:
    class _R:
        best_val_loss = best

    return MetaTrainOutcome(_R(), initial)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("initial", "best", "learned"),
    [
        (2.31, 2.31, False),  # stayed at the start (the chance level of 10 classes)
        (2.31, 2.31 * (1 - LEARN_MARGIN / 2), False),  # a little better is not clearly better
        (2.31, 2.31 * (1 - 2 * LEARN_MARGIN), True),
        (1.0, math.inf, False),  # diverged
        (math.inf, 0.5, True),  # the initial weights diverged, the trained ones do not
    ],
)
def test_learned_needs_a_clear_drop_of_the_validation_loss(
    initial: float, best: float, learned: bool
) -> None:
    assert _outcome(initial, best).learned is learned


def test_a_frozen_teacher_is_flagged_and_its_initial_loss_recorded() -> None:
    kind = STAGES.get("meta_train")
    trial = MetaTrainTrial(
        teacher={"name": "rp", "kwargs": {"hidden": 4, "out_scale": 0.1}},
        optimizee={"name": "quadratic_cos"},
        seed=0,
        settings={"episode_length": 20, "unroll": 10, "episodes": 4, "eval_every": 2, "meta_lr": 0.0},
        checkpoint_every=2,
    )
    ctx = LocalContext()
    res = run_local(kind, trial, ctx)
    assert res.info["learned"] == "false" and "did not learn" in res.info["warning"]
    assert res.metrics["learned"] == 0.0 and math.isfinite(res.metrics["initial_val_loss"])
    # checkpoints keep the initial loss, so a resumed trial judges against the same start
    assert ctx.state is not None and ctx.state["initial_val_loss"] == res.metrics["initial_val_loss"]


def test_target_varying_fraction() -> None:
    assert target_varying_fraction(np.full(100, -0.02)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    centred = rng.normal(size=10_000)
    assert target_varying_fraction(centred) == pytest.approx(1.0, abs=0.01)
    # a near-constant target with small wiggles: almost nothing of it depends on anything
    assert target_varying_fraction(-0.02 + 0.001 * centred) < 0.01


def test_distill_rows_give_table3_columns(tmp_path: Path) -> None:
    ds = collect(
        {"rule": "momentum", "kwargs": {"lr": 0.05, "beta": 0.6}, "label": "momentum"},
        [{"name": "quadratic_cos", "steps": 40}],
        lags=4,
        n_samples=300,
        seeds_per_optimizee=1,
    )
    front = distill(ds, "linear", {"max_complexity": 20}, 0)
    (tmp_path / "f.json").write_text("")
    front.save(tmp_path / "f.json")
    files = merge_and_choose([tmp_path / "f.json"], "best", tmp_path / "stage")
    (row,) = distill_rows([files["chosen.json"]], "distill")
    assert row["source"] == "momentum" and row["learned"] is True
    assert row["r2_val"] > 0.99 and row["front_size"] >= 1 and row["mc"] is not None
    assert 0.0 < row["tpf"] < 4 and row["tpf_g"] == row["tpf"]
    assert 0.9 < row["input_dependent_fraction"] <= 1.0
    assert "g_0" in row["equation"] and row["complexity"] > 0

    kind = STAGES.get("distill")
    outcome = StageOutcome(
        "distill", "distill", "k", "r", False, extra={"chosen": {"m": str(files["chosen.json"])}}
    )
    spec = kind.spec_model.model_validate({"kind": "distill", "name": "distill", "from_stage": "data"})
    lines = kind.summarize(spec, outcome)
    assert lines[0].startswith("[distill] distill: 0 trials ok, 0 errored")
    assert "momentum: update = " in lines[1] and "held-out R²" in lines[2] and "TPF" in lines[2]


def test_meta_train_summary_names_each_teacher_and_the_flag() -> None:
    kind = STAGES.get("meta_train")
    trials = [
        TrialOutput(
            "a" * 32,
            {},
            {
                "sl2o.teacher": "rp",
                "sl2o.optimizee": "mlp",
                "sl2o.seed": "0",
                "sl2o.learned": "true",
                "sl2o.stop_reason": "time",
            },
            {"initial_val_loss": 2.3, "best_val_loss": 0.9},
            None,
        ),
        TrialOutput(
            "b" * 32,
            {},
            {
                "sl2o.teacher": "dm",
                "sl2o.optimizee": "mlp",
                "sl2o.seed": "0",
                "sl2o.learned": "false",
                "sl2o.warning": "teacher did not learn: ...",
            },
            {"initial_val_loss": 2.31, "best_val_loss": 2.31},
            None,
        ),
    ]
    outcome = StageOutcome("teachers", "meta_train", "k", "r", False, trials)
    spec = kind.spec_model.model_validate(
        {
            "kind": "meta_train",
            "name": "teachers",
            "teachers": [{"name": "rp"}],
            "optimizees": [{"name": "mlp"}],
        }
    )
    text = "\n".join(kind.summarize(spec, outcome))
    assert "rp on mlp s0: validation loss 2.3 -> 0.9 (learned" in text
    assert "dm on mlp s0: validation loss 2.31 -> 2.31 (DID NOT LEARN" in text
    assert "WARNING (bbbbbbbb): teacher did not learn" in text
