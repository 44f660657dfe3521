"""How an evaluate stage names the optimizers it reads from an earlier stage (``from_stage``)."""

from __future__ import annotations

from pathlib import Path

from harness.stages.outputs import (
    EQUATION_FILE,
    StageOutcome,
    TrialOutput,
    entry_name,
    optimizers_from_stage,
    tag,
)
from harness.symbolic.lang import Equation


def test_entry_name_keeps_outputs_of_one_stage_apart() -> None:
    assert entry_name(None, "tune-s1", "tune", 2) == "tune-s1"
    assert entry_name("fast", "tune-s0", "tune", 1) == "fast"
    assert entry_name("fast", "tune-s1", "tune", 2) == "fast-s1"
    assert entry_name("fast", "rp-s0", "teachers", 2) == "fast-rp-s0"


def test_a_named_entry_over_several_equations_gives_one_optimizer_each(tmp_path: Path) -> None:
    trials = []
    for seed in (0, 1):
        art = tmp_path / str(seed)
        art.mkdir()
        Equation.parse(f"-{seed + 1}*g_0").save(art / EQUATION_FILE)
        trials.append(TrialOutput(f"r{seed}", {}, {tag("seed"): str(seed)}, {}, art))
    outcome = StageOutcome("tune", "meta_tune", "k", "r", False, trials)
    configs = optimizers_from_stage({"family": "symbolic", "from_stage": "tune", "name": "mine"}, outcome)
    assert [c["name"] for c in configs] == ["mine-s0", "mine-s1"]
    assert [Path(c["equation"]).parent.name for c in configs] == ["0", "1"]
