"""Fair shares of the cluster's CPUs between the stages a graph runs at once (harness.engine.fairshare)."""

from __future__ import annotations

import pickle

import pytest

from harness.engine.fairshare import (
    FairShare,
    GatedLimiter,
    GatedVariantGenerator,
    TrialCounter,
    active,
    allot,
    gate_for,
    sharing,
)


def test_allot_serves_the_critical_path_first_and_uses_every_cpu() -> None:
    stages = {
        "teacher": (1.0, 1, (30, 0)),  # one trial, 30 stages downstream
        "hpo": (1.0, 20, (1, -2)),
        "grid": (1.0, 1680, (0, -1)),  # a leaf with many trials
    }
    assert allot(2, stages) == {"teacher": 1, "hpo": 1, "grid": 0}
    assert allot(4, stages) == {"teacher": 1, "hpo": 2, "grid": 1}
    assert allot(64, stages) == {"teacher": 1, "hpo": 20, "grid": 43}  # nobody gets more than it can use
    # trials of 2 CPUs and of half a CPU share the same CPUs
    assert allot(3, {"big": (2.0, 5, (1, 0)), "small": (0.5, 5, (0, -1))}) == {"big": 1, "small": 2}
    assert allot(1, {"big": (2.0, 5, (1, 0))}) == {"big": 0}


def test_a_share_moves_with_the_stages_and_their_trials() -> None:
    cpus = [2.0]
    share = FairShare({"teacher": (5, 0), "grid": (0, -1), "hpo": (1, -2)}, lambda: cpus[0])
    grid, teacher, hpo = gate_for(None, None), gate_for(None, None), gate_for(None, 3)
    share.join("grid", grid, cpus_per_trial=1, trials=100, cap=None)
    assert share.shares() == {"grid": 3}  # alone, the grid gets the cluster (+1 proposed ahead)
    share.join("teacher", teacher, cpus_per_trial=1, trials=1, cap=None)
    share.join("hpo", hpo, cpus_per_trial=1, trials=20, cap=3)
    assert share.shares() == {"grid": 0, "teacher": 2, "hpo": 2}  # within their shares: one proposed ahead
    share._event("teacher", started=1)
    share._event("hpo", started=1)
    share._event("hpo", started=1)  # over its share of 1: no trial ahead, its finishing actor goes
    assert share.shares() == {"grid": 0, "teacher": 2, "hpo": 1}
    share._event("hpo", ended=1)
    share._event("teacher", ended=1)  # its one trial ended: its CPU goes on, its source runs to its end
    assert share.shares() == {"grid": 2, "teacher": None, "hpo": 2}
    share.leave("teacher")
    share.leave("hpo")
    assert share.shares() == {"grid": 3} and hpo.allowed is None  # a stage that left is not gated


def test_no_stage_waits_forever_for_cpus_the_cluster_does_not_have() -> None:
    share = FairShare({}, lambda: 1.0)
    gate = gate_for(None, None)
    share.join("wide", gate, cpus_per_trial=4, trials=3, cap=None)
    assert gate.allowed == 2  # Ray decides whether it fits; the share never blocks it outright


def test_the_gates_hold_back_proposals_and_never_save_their_share() -> None:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    grid = gate_for(None, None)
    assert isinstance(grid, GatedVariantGenerator) and isinstance(grid, BasicVariantGenerator)
    grid._live_trials = {"a"}
    grid.allowed = 1
    assert grid.next_trial() is None  # one live trial, one allowed
    grid.allowed = 0
    state = grid.get_state()
    assert "allowed" not in state
    grid.allowed = 2
    grid.set_state(state)
    assert grid.allowed == 2  # a resumed stage keeps the share it is given now


def test_a_search_is_gated_behind_its_own_limit_too() -> None:
    from ray.tune.search import Searcher

    class Constant(Searcher):
        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    gate = gate_for(Constant(metric="m", mode="min"), 2)
    assert isinstance(gate, GatedLimiter) and gate.max_concurrent == 2
    assert gate.suggest("t1") == {"x": 1}
    gate.allowed = 1
    assert gate.suggest("t2") is None  # the share holds it at one live trial
    gate.allowed = None
    assert gate.suggest("t2") == {"x": 1} and gate.suggest("t3") is None  # its own max_concurrent: 2
    assert "allowed" not in gate.get_state()


def test_a_trial_counter_survives_pickling_and_reports_to_the_active_share() -> None:
    counter = pickle.loads(pickle.dumps(TrialCounter("grid")))  # Tune saves callbacks with the experiment
    counter.on_trial_start(0, [], None)  # no graph running: nothing to report to
    assert active() is None
    with sharing({"grid": (0, 0)}, lambda: 2.0) as share:
        assert active() is share
        share.join("grid", gate_for(None, None), cpus_per_trial=1, trials=3, cap=None)
        for _ in range(3):
            counter.on_trial_start(0, [], None)
            counter.on_trial_complete(0, [], None)
        assert share._stages["grid"].remaining == 0
    assert active() is None


@pytest.mark.parametrize("cap", [None, 1])
def test_a_stage_cap_bounds_its_share(cap) -> None:
    share = FairShare({}, lambda: 8.0)
    gate = gate_for(None, cap)
    share.join("s", gate, cpus_per_trial=1, trials=50, cap=cap)
    assert gate.allowed == (8 if cap is None else 1) + 1
