"""benchmarks/perf/transfer_panel.py: the panel's suite (the same tuning for every target), its quick variant,
and the arithmetic of its rows (which rule and which baseline count, ratios, budgets, profiles)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from harness.stages.outputs import StageOutcome, TrialOutput, tag
from harness.symbolic.families import sgd_equation

PERF = Path(__file__).resolve().parents[2] / "benchmarks" / "perf"


@pytest.fixture(scope="module")
def panel():
    spec = importlib.util.spec_from_file_location("transfer_panel_script", PERF / "transfer_panel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _per_target_settings(stage) -> dict:
    """An hpo stage's settings without what names its target and its method."""
    return stage.model_dump(exclude={"name", "optimizee", "space", "from_stage"})


def test_the_panel_tunes_every_target_the_same_way(panel) -> None:
    suite = panel.load_panel(panel.SUITE, quick=False)
    targets = panel.targets(suite)
    assert len(targets) >= 6
    grid = suite.stage("grid")
    labels = [o.label for o in grid.optimizees]
    assert labels == targets and all(len(o.horizons()) == 2 for o in grid.optimizees)
    for o in grid.optimizees:  # the long horizon is 5x the tuning horizon
        short, long = (h.steps for h in o.horizons())
        assert long == 5 * short
    hpo = [s for s in suite.stages if s.kind == "hpo"]
    assert len(hpo) == 4 * len(targets)
    assert len({str(_per_target_settings(s)) for s in hpo}) == 1  # no per-target setting
    for s in hpo:  # each search tunes at its target's tuning horizon, on tuning seeds only
        target = s.name.split(".", 1)[1]
        (short, _) = next(o for o in grid.optimizees if o.label == target).horizons()
        assert s.optimizee.steps == short.steps and not set(s.seeds) & set(grid.seeds)
    # at least half the targets train on data the teacher never saw (it meta-trained on digits)
    teacher_data = suite.stage("teacher").optimizees[0].kwargs["dataset"]
    unseen = [o for o in grid.optimizees if o.kwargs.get("dataset", "generated text") != teacher_data]
    assert 2 * len(unseen) >= len(targets)


def test_the_quick_panel_is_the_same_route_shrunk(panel) -> None:
    full = panel.load_panel(panel.SUITE, quick=False)
    quick = panel.load_panel(panel.SUITE, quick=True)
    assert panel.targets(quick) == list(panel.QUICK_TARGETS)
    assert {s.kind for s in quick.stages} == {s.kind for s in full.stages}
    for s in quick.stages:
        if s.kind == "hpo":
            assert s.n_trials == panel.QUICK_TRIALS and s.optimizee.steps == panel.QUICK_STEPS
            assert s.seeds == full.stage(s.name).seeds and s.space == full.stage(s.name).space


def _stage(name: str, kind: str, trials=(), extra=None) -> StageOutcome:
    out = StageOutcome(name, kind, "k", "run", False, trials=list(trials))
    out.extra = extra or {}
    return out


def _eval(
    optimizer: str, target: str, horizon: str, seed: int, loss: float, acc: float | None
) -> TrialOutput:
    metrics = {"final_train_loss": loss}
    if acc is not None:
        metrics["test_acc"] = acc
    tags = {
        tag("optimizer"): optimizer,
        tag("optimizee"): target,
        tag("horizon"): horizon,
        tag("seed"): str(seed),
    }
    return TrialOutput(f"{optimizer}{seed}{horizon}", {}, tags, metrics, None)


def _search(config: dict | None, objective: float, trainings: float) -> dict:
    if config is None:
        return {}
    return {"chosen": config, "metrics": {"best_objective": objective, "tuning_trainings": trainings}}


class _Suite:
    def __init__(self, targets):
        self.stages = [type("S", (), {"kind": "evaluate", "name": f"rules.{t}"})() for t in targets]


class _Outcome:
    def __init__(self, stages):
        self.stages = {s.name: s for s in stages}


def test_rows_pick_rule_and_baseline_on_validation_figures_only(panel, tmp_path: Path) -> None:
    eq = str(sgd_equation(0.1).save(tmp_path / "eq.json"))
    t, h1, h5 = "mlp", "10 steps", "50 steps"
    rule_cfg = {"family": "symbolic", "equation": eq, "lr_mult": 2.0, "schedule": "cosine", "warmup": 0.1}
    stages = [
        # validation objectives: operon's search (0.3) beats eq6's (0.4); sgd's (0.5) beats adam's (0.6)
        _stage("eq6.mlp", "hpo", extra=_search({**rule_cfg}, 0.4, 40)),
        _stage("operon.mlp", "hpo", extra=_search({**rule_cfg}, 0.3, 40)),
        _stage("adam.mlp", "hpo", extra=_search({"family": "adam", "lr": 0.01}, 0.6, 40)),
        _stage("sgd.mlp", "hpo", extra=_search({"family": "sgd", "lr": 0.1}, 0.5, 40)),
        _stage(
            "rules.mlp",
            "evaluate",
            [
                _eval(f"symbolic:{n}(lr_mult=2)", t, h, s, loss, 0.9)
                for n, (a, b) in {"eq6-tuned": (0.1, 0.01), "operon-tuned": (0.4, 0.2)}.items()
                for h, loss in ((h1, a), (h5, b))
                for s in (100, 101)
            ]
            + [
                _eval(f"{n}:{n}-tuned(lr=0.1)", t, h, s, 0.5, 0.95)
                for n in ("adam", "sgd")
                for h in (h1, h5)
                for s in (100, 101)
            ],
        ),
        _stage(
            "grid",
            "evaluate",
            [
                _eval("sgd(lr=0.1)", t, h, s, 0.8 if h == h1 else 0.1, 0.97)
                for h in (h1, h5)
                for s in (100, 101)
            ]
            + [_eval("adam(lr=0.01)", t, h, s, 0.2, 0.92) for h in (h1, h5) for s in (100, 101)]
            + [_eval("adam(lr=0.01)", "other", h, 100, 0.001, 0.99) for h in (h1, h5)],
        ),
    ]
    rows, losses = panel.panel_rows(_Suite([t]), _Outcome(stages))
    assert [r["horizon"] for r in rows] == [h1, h5]
    short, long = rows
    # operon's search won on validation, so the row is operon's, though eq6 trained better on the test seeds
    assert short["rule"] == "operon-tuned" and short["tuned_baseline"] == "sgd-tuned"
    assert short["ratio_vs_grid"] == pytest.approx(0.4 / 0.2) and short["best_grid_config"] == "adam(lr=0.01)"
    assert long["ratio_vs_grid"] == pytest.approx(0.2 / 0.1) and long["ratio_vs_tuned"] == pytest.approx(0.4)
    # another target's grid rows never count
    assert short["best_grid_loss"] == pytest.approx(0.2)
    assert short["rule_test_acc"] == pytest.approx(0.9) and short["best_test_acc"] == pytest.approx(0.97)
    assert short["tuning_trainings_rule"] == 80 and short["tuning_trainings_baseline"] == 80
    assert short["equation"].startswith("-0.1*g_0  x 2  x [linear warm-up over 10% of the run, then cosine")
    assert short["features"] == ["g_0"]
    assert losses[f"{t} · {h5}"] == {
        "rule": pytest.approx(0.2),
        "tuned Adam/SGD": pytest.approx(0.5),
        "grid's best adam": pytest.approx(0.2),
        "grid's best sgd": pytest.approx(0.1),
    }
    lines = panel.profile_lines(losses)
    assert "2 tasks" in lines[0] and any(line.split()[0] == "rule" for line in lines[2:])


def test_a_search_that_chose_nothing_loses(panel) -> None:
    outcome = _Outcome(
        [_stage("eq6.t", "hpo"), _stage("operon.t", "hpo", extra=_search({"family": "x"}, 0.2, 8))]
    )
    method, result, spent = panel.pick(outcome, "t", panel.RULES)
    assert method == "operon" and result["objective"] == 0.2 and spent == 8
    assert math.isinf(panel.search_result(outcome, "eq6.t")["objective"])


def test_the_gpu_panel_is_the_same_panel_with_larger_targets(panel) -> None:
    """The GPU sizes build and take a training step (here on the CPU: no GPU on this machine; the device
    path is the evaluate stage's own, tested in tests/test_cuda_twins.py)."""
    import torch

    from harness.stages.evaluate import train
    from harness.stages.problems import build_problem
    from harness.training.optimizers import build_optimizer

    cpu, gpu = panel.load_panel(panel.SUITE), panel.load_panel(panel.SUITE, size="gpu")
    assert panel.targets(gpu) == panel.targets(cpu) and gpu.resources.gpus_per_trial == 0.25
    assert [s.name for s in gpu.stages] == [s.name for s in cpu.stages]
    grown = 0
    for small, big in zip(cpu.stage("grid").optimizees, gpu.stage("grid").optimizees, strict=True):
        assert small.label == big.label and small.steps == big.steps
        if big.kwargs == small.kwargs:
            continue
        grown += 1
        spec = big.model_dump(exclude_none=True) | {"steps": 1}
        torch.manual_seed(0)
        problem = build_problem(spec, seed=0)
        res = train(
            problem, lambda p: build_optimizer({"family": "adam", "lr": 1e-3}, p, 1), 1, measure_cost=False
        )
        assert res.status == "ok", big.label
    assert grown == len(panel.GPU_KWARGS)
