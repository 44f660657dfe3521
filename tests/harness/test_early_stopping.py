"""Early stopping (ASHA) without a Ray run: the suite option, the rungs a trial reports at, the per-task
scheduler on synthetic results, the tracker's stopped record, the budget figures and the leaderboard rows."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from harness import tracking
from harness.config.specs import EarlyStopping
from harness.config.suite import SuiteError, load_suite_dict
from harness.engine import trainable
from harness.engine.early_stopping import PerTaskASHA, budget_metrics, early_stopping_config, milestones
from harness.registry import STAGES
from harness.report.leaderboard import (
    STOPPED_VERDICT,
    aggregate,
    to_csv,
    to_json,
    to_markdown,
    to_rich_tables,
)
from harness.stages.evaluate.kind import EvaluateTrial
from harness.stages.outputs import STATUS_STOPPED, TAG, ResultKey, TrialOutput

STAGE = {
    "kind": "evaluate",
    "name": "grid",
    "optimizees": [{"name": "quadratic_cos", "steps": [100, 500]}],
    "optimizers": [{"family": "adam", "lr": 0.01}],
    "early_stopping": {"scheduler": "asha", "grace_steps": 20},
}


def _suite(**early: Any) -> dict[str, Any]:
    stage = copy.deepcopy(STAGE)
    stage["early_stopping"].update(early)
    return {"name": "s", "stages": [stage]}


# -- the suite option -----------------------------------------------------------------------------------------
def test_the_option_validates_with_its_defaults() -> None:
    spec = load_suite_dict(_suite()).stages[0]
    es = STAGES.get("evaluate").early_stopping(spec)
    assert es == EarlyStopping(scheduler="asha", grace_steps=20, reduction_factor=3.0)
    assert STAGES.get("evaluate").early_stopping(load_suite_dict({"name": "s", "stages": [{
        **STAGE, "early_stopping": None}]}).stages[0]) is None  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scheduler": "hyperband"}, r"unknown early-stopping scheduler 'hyperband'; known: asha"),
        ({"grace_steps": 0}, r"early_stopping\.grace_steps"),
        ({"reduction_factor": 1}, r"early_stopping\.reduction_factor"),
        ({"grace_steps": 100}, r"grace_steps \(100\) must be below the shortest horizon \(100 steps\)"),
        ({"brackets": 2}, r"early_stopping\.brackets"),
    ],
)
def test_bad_settings_are_refused_with_their_path(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suite_dict(_suite(**change))


def test_early_stopping_needs_horizons_in_steps() -> None:
    data = _suite()
    data["stages"][0]["optimizees"] = [{"name": "quadratic_cos", "epochs": 2}]
    with pytest.raises(SuiteError, match=r"needs every optimizee's horizon in steps"):
        load_suite_dict(data)


# -- rungs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("grace", "rf", "total"),
    [(20, 3, 100), (100, 3, 500), (20, 5, 100), (1, 2, 16), (10, 3, 90), (33, 3.5, 1000), (7, 4, 7), (3, 3, 2)],
)
def test_milestones_are_ashas_rungs_below_the_total(grace: int, rf: float, total: int) -> None:
    rungs = sorted(m for m, _ in _Bracket(grace, total, rf, 0)._rungs) if grace <= total else []
    assert milestones(grace, rf, total) == [m for m in rungs if m < total]


def test_a_trial_reports_once_at_each_rung_with_its_interim_values(monkeypatch: pytest.MonkeyPatch) -> None:
    reports: list[dict[str, Any]] = []
    monkeypatch.setattr(trainable.tune, "report", lambda r, **kw: reports.append(r))
    monkeypatch.setattr(trainable, "CURVE_FLUSH_S", 1e9)  # no timed curve flushes in this test
    ctx = trainable.TuneContext(Path("."), 1, {"grace_steps": 20, "reduction_factor": 3})
    ctx.set_total(100)  # rungs 20 and 60
    for step in [1, *range(15, 101, 15)]:  # log points 1, 15, 30, 45, 60, 75, 90
        ctx.progress(step, train_loss=float(step), train_loss_mean=step / 2)
    assert [r[ResultKey.STEP] for r in reports] == [30, 60]
    assert all(r[ResultKey.TOTAL_STEPS] == 100 and r["train_loss_mean"] == r["step"] / 2 for r in reports)
    assert reports[0][ResultKey.CURVE_STEPS] == [1, 15, 30] and reports[0][ResultKey.INTERIM_KEYS] == [
        "train_loss",
        "train_loss_mean",
    ]
    plain = trainable.TuneContext(Path("."), 1)  # a stage without early stopping: no rung reports
    plain.set_total(100)
    plain.progress(60, train_loss=1.0)
    assert len(reports) == 2


# -- the per-task scheduler -----------------------------------------------------------------------------------
class _Trial:
    """What a scheduler reads of a Tune trial."""

    def __init__(self, trial_id: str, steps: int, optimizee: str = "quadratic_cos") -> None:
        self.trial_id = trial_id
        model = EvaluateTrial.model_validate(
            {"optimizee": {"name": optimizee, "steps": steps}, "optimizer": {"family": "adam"}, "seed": 0}
        )
        self.config = {"kind": "evaluate", "trial": model}


def _result(step: int, loss: float) -> dict[str, Any]:
    return {ResultKey.STEP: step, "train_loss_mean": loss, ResultKey.TOTAL_STEPS: 100}


def test_each_task_has_its_own_asha_and_the_worse_trials_stop() -> None:
    stage = load_suite_dict(_suite()).stages[0]
    space: dict[str, Any] = {"kind": "evaluate"}
    sched = early_stopping_config(STAGES.get("evaluate"), stage, space)["scheduler"]
    assert isinstance(sched, PerTaskASHA) and space["early_stopping"] == {"grace_steps": 20, "reduction_factor": 3}
    sched.set_search_properties(None, None)
    assert sched.metric in (None, DEFAULT_METRIC)  # Tune's strict check then asks no report for a metric
    short = [_Trial(f"s{i}", 100) for i in range(4)]
    long = [_Trial(f"l{i}", 500) for i in range(2)]
    for t in short + long:
        sched.on_trial_add(None, t)
    assert set(sched.schedulers) == {"quadratic_cos · 100 steps", "quadratic_cos · 500 steps"}
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    # the 100-step task: the first at a rung continues, a worse one stops, a better one continues
    assert sched.on_trial_result(None, short[0], _result(20, 1.0)) == go
    assert sched.on_trial_result(None, short[1], _result(20, 5.0)) == stop
    assert sched.on_trial_result(None, short[2], _result(20, 0.5)) == go
    # the 500-step task compares only its own trials: far worse losses than the other task's still continue
    assert sched.on_trial_result(None, long[0], _result(100, 50.0)) == go
    assert sched.on_trial_result(None, long[1], _result(100, 40.0)) == go
    # curve batches without the interim metric, and results past the last rung, never stop a trial
    assert sched.on_trial_result(None, short[3], {ResultKey.STEP: 25}) == go
    assert sched.on_trial_result(None, short[0], {"final": True, "final_train_loss": 9.0}) == go
    sched.on_trial_complete(None, short[0], {"final": True})
    sched.on_trial_remove(None, short[3])
    assert set(sched.tasks) == {"s1", "s2", "l0", "l1"}
    assert "quadratic_cos · 100 steps" in sched.debug_string()


# -- the tracker and the budget -------------------------------------------------------------------------------
def test_a_stopped_trial_is_recorded_as_stopped_and_finished(tmp_path: Path, fake_trial: Any) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    client = tracking.init_tracking(uri)
    exp = tracking.ensure_experiment(client, "t", uri)
    parent = tracking.start_run(client, exp, "stage", {f"{TAG}.kind": "stage"})
    tr = tracking.TrialTracker(
        uri, exp, parent, {}, lambda cfg: {f"{TAG}.trial_key": "k1", f"{TAG}.label": "x"}, lambda cfg: {}
    )
    a = fake_trial("a", {"x": 1})
    tr.on_trial_start(0, [], a)
    rung = {
        ResultKey.CURVE_STEPS: [1, 20],
        "curve_train_loss": [3.0, 2.0],
        ResultKey.STEP: 20,
        "train_loss": 2.0,
        "train_loss_mean": 2.5,
        ResultKey.INTERIM_KEYS: ["train_loss", "train_loss_mean"],
        "done": True,  # Tune's mark where the scheduler said STOP
    }
    tr.on_trial_result(0, [], a, rung)
    tr.on_trial_complete(0, [], a)
    tracking.writer_for(uri).flush()
    (run,) = tracking.find_runs(client, [exp], f"tags.`{TAG}.kind` = 'trial'")
    assert run.info.status == "FINISHED" and run.data.tags[f"{TAG}.status"] == STATUS_STOPPED
    assert run.data.metrics[ResultKey.STOPPED_AT] == 20 and run.data.metrics["train_loss_mean"] == 2.5


def test_budget_metrics_count_the_steps_stopping_saved() -> None:
    kind = STAGES.get("evaluate")
    trials = [
        EvaluateTrial.model_validate(
            {"optimizee": {"name": "quadratic_cos", "steps": s}, "optimizer": {"family": "adam"}, "seed": i}
        )
        for i, s in enumerate([100, 100, 500])
    ]
    keys = ["k0", "k1", "k2"]

    def out(key: str, status: str, metrics: dict[str, float]) -> TrialOutput:
        return TrialOutput(key, {}, {f"{TAG}.trial_key": key, f"{TAG}.status": status}, metrics, None)

    outputs = [out("k0", "ok", {}), out("k1", STATUS_STOPPED, {"stopped_at_step": 20}), out("k2", STATUS_STOPPED, {
        "stopped_at_step": 100})]  # fmt: skip
    m = budget_metrics(kind, trials, keys, outputs)
    assert m == {
        "early_stopped": 2.0,
        "budget_steps_planned": 700.0,
        "budget_steps_run": 700.0 - 80 - 400,
        "budget_saved_fraction": pytest.approx(480 / 700),
    }
    # a search plans one base trial and runs the trials its searcher proposes (keys not planned): each counts
    # the base's steps, and the plan is the proposals
    proposals = [out("p0", "ok", {}), out("p1", STATUS_STOPPED, {"stopped_at_step": 30}), out("p2", "ok", {})]
    m = budget_metrics(kind, trials[:1], ["base"], proposals)
    assert m["budget_steps_planned"] == 300.0 and m["budget_steps_run"] == 230.0 and m["early_stopped"] == 1.0


# -- the leaderboard ------------------------------------------------------------------------------------------
def _rec(opt: str, seed: int, value: float | None, status: str = "ok") -> dict[str, Any]:
    metrics = {"train_loss_mean": 9.0, "stopped_at_step": 20.0} if value is None else {"final_train_loss": value}
    return {
        "suite": "s",
        "stage": "grid",
        "optimizee": "p1",
        "horizon": "100 steps",
        "optimizer": opt,
        "family": opt.split("(")[0],
        "seed": seed,
        "status": status,
        "metric": "final_train_loss",
        "mode": "min",
        "metrics": metrics,
        "run_id": f"{opt}{seed}",
    }


def test_configs_with_stopped_seeds_are_listed_after_the_ranked_rows_unranked() -> None:
    records = [
        *(_rec("adam", s, v) for s, v in enumerate([1.0, 1.2, 1.1])),
        *(_rec("sgd(lr=0.1)", s, v) for s, v in enumerate([0.5, 0.6, 0.7])),
        # the best finished seed of all, but one seed stopped: never ranked against complete rows
        _rec("sgd(lr=0.01)", 0, 0.1),
        _rec("sgd(lr=0.01)", 1, None, STATUS_STOPPED),
        _rec("sgd(lr=0.01)", 2, 0.2),
        *(_rec("sgd(lr=0.001)", s, None, STATUS_STOPPED) for s in range(3)),
    ]
    rows = aggregate(records)
    assert [(r["optimizer"], r["rank"]) for r in rows] == [
        ("sgd(lr=0.1)", 1),
        ("adam", 2),
        ("sgd(lr=0.01)", None),
        ("sgd(lr=0.001)", None),
    ]
    one, every = rows[2], rows[3]
    assert one["verdict"] == every["verdict"] == STOPPED_VERDICT and rows[0]["reference"] == "adam"
    assert (one["n"], one["stopped"], one["mean"]) == (3, 1, pytest.approx(0.15))
    assert (every["n"], every["stopped"]) == (3, 3) and math.isnan(every["mean"])
    assert math.isnan(one["diff"]) and rows[1]["verdict"] == "reference"

    data = json.loads(to_json(rows))
    assert [r["rank"] for r in data] == [1, 2, None, None] and data[3]["mean"] is None
    csv = to_csv(rows).splitlines()
    assert csv[0].split(",")[:13] == [
        "suite", "optimizee", "horizon", "rank", "optimizer", "family", "metric", "mean", "std", "n",
        "diverged", "errored", "stopped",
    ]  # fmt: skip
    assert csv[3].startswith("s,p1,100 steps,,sgd(lr=0.01),sgd,final_train_loss,0.15") and "stopped early" in csv[3]
    md = to_markdown(rows)
    assert "| 3 (1 stopped) |" in md and "| 3 (3 stopped) |" in md and md.count("stopped early") == 2

    from rich.console import Console

    console = Console(width=200, record=True)
    for t in to_rich_tables(rows, width=200, wide=True):
        console.print(t)
    text = console.export_text()
    assert "3 (1 stopped)" in text and text.count("stopped early") == 2 and "sgd(lr=0.001)" in text
    # a name too long for the terminal moves to a legend: unranked rows are keyed s1, s2, ..., one row each
    long = "sgd(lr=0.001,momentum=0.9,nesterov=true,cosine=true)"
    renamed = [{**r, "optimizer": long} if r["optimizer"] == "sgd(lr=0.001)" else r for r in records]
    console = Console(width=100, record=True)
    for t in to_rich_tables(aggregate(renamed), width=100):
        console.print(t)
    text = console.export_text()
    assert "s: stopped early" in text and f"│ s2 │ {long}" in text and "│ s1 │ sgd(lr=0.01)" in text
