"""harness.engine.search: an Optuna meta_tune stage as Ray Tune trials (OptunaSearch) on a real local Tuner.

Each Optuna trial is one Tune trial whose config carries its own trial model; the study lives in Tune's
experiment state, so a stopped search resumes with ``Tuner.restore`` without redoing finished trials; the
stage's finalize step selects the best trial and checks it on the validation split.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from harness.config.suite import load_suite_dict
from harness.engine.search import SearchPlan, tune_search
from harness.registry import STAGES
from harness.stages.base import LocalContext
from harness.stages.meta_tune.tune_trials import OBJECTIVE, PARAMS
from harness.stages.outputs import StageOutcome, TrialOutput, equations_from_stage, tag
from harness.symbolic.families import sgd_equation
from harness.symbolic.lang import Equation

P1 = {"name": "quadratic_cos", "steps": 15}
ASHA = {"scheduler": "asha", "grace_steps": 5}

pytestmark = pytest.mark.usefixtures("one_thread")


def _stage(eq_file: Path, **extra: Any) -> Any:
    spec = {
        "kind": "meta_tune",
        "name": "tune",
        "equation": str(eq_file),
        "optimizee": P1,
        "method": "optuna",
        "search": "tune",
        "settings": {"n_trials": 5, "sampler": "tpe", "eval_seeds": [7]},
        **extra,
    }
    suite = load_suite_dict({"name": "search-test", "stages": [spec]})
    return suite, suite.stages[0]


def _plan(eq_file: Path, **extra: Any) -> tuple[Any, Any, list[Any], SearchPlan | None]:
    suite, stage = _stage(eq_file, **extra)
    kind = STAGES.get("meta_tune")
    trials = kind.plan(suite, stage, {})
    return kind, stage, trials, tune_search(kind, stage, trials)


def _tuner(plan: SearchPlan, path: Path, name: str, max_concurrent: int = 2, stop_after: int = 0) -> Any:
    """A Tuner as the runner builds one; ``stop_after``: Ctrl-C (SIGINT to this process, Tune's own handler)
    after that many finished trials while ``path/interrupt`` exists (a restored run without it goes on)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from harness.engine.trainable import run_trial

    flag = path / "interrupt"
    if stop_after:
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()

    class CtrlC(tune.Callback):
        def __init__(self) -> None:
            self.done: set[str] = set()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done.add(trial.trial_id)
            if flag.exists() and len(self.done) >= stop_after:
                flag.unlink()
                os.kill(os.getpid(), signal.SIGINT)

    return tune.Tuner(
        tune.with_resources(run_trial, {"cpu": 1}),
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, **plan.tune_config),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(path),
            verbose=0,
            # as the runner: results on disk
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *([CtrlC()] if stop_after else [])],
        ),
    )


def _outcome(results: list[Any]) -> StageOutcome:
    """What the runner hands finalize: one TrialOutput per finished trial (tags and metrics as tracked)."""
    kind = STAGES.get("meta_tune")
    trials = []
    for i, r in enumerate(results):
        m = r.metrics
        t = r.config["trial"]
        tags = {tag(k): v for k, v in kind.trial_tags(t).items()}
        tags.update({tag(k): v for k, v in (m.get("info") or {}).items()})
        cfg = t.model_dump(mode="json", include=set(kind.identity))
        trials.append(TrialOutput(f"run{i}", cfg, tags, {k: m[k] for k in m["final_keys"]}, None))
    return StageOutcome("tune", "meta_tune", "key", "stage-run", False, trials)


def test_grid_stages_have_no_search(tmp_path: Path) -> None:
    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    assert _plan(eq_file, search="in_trial")[3] is None
    gradient = {"method": "gradient", "search": "in_trial", "settings": {}, "seeds": [0, 1, 2]}
    kind, _, trials, plan = _plan(eq_file, **gradient)
    assert plan is None and [t.seed for t in trials] == [0, 1, 2]  # one (parallel) trial per seed
    suite = load_suite_dict(
        {
            "name": "s",
            "stages": [
                {
                    "kind": "evaluate",
                    "name": "e",
                    "optimizees": [P1],
                    "optimizers": [{"family": "adam", "lr": 0.01}],
                }
            ],
        }
    )
    ev = STAGES.get("evaluate")
    assert tune_search(ev, suite.stages[0], ev.plan(suite, suite.stages[0], {})) is None


def test_bad_search_settings_are_one_line_errors(tmp_path: Path) -> None:
    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    cases = [
        ({"method": "gradient", "settings": {}}, "needs method: optuna"),
        ({"seeds": [0, 1]}, "give one seed"),
        ({"settings": {"storage": "sqlite:///x.db"}}, "are for search: in_trial"),
        ({"search": "ray"}, "search"),
        ({"search": "in_trial", "early_stopping": ASHA}, "early_stopping stops Optuna trials run as Ray Tune"),
        ({"optimizee": {"name": "quadratic_cos", "epochs": 1}, "early_stopping": ASHA}, "gives epochs"),
        ({"early_stopping": {**ASHA, "grace_steps": 15}}, r"grace_steps \(15\) must be below the steps"),
    ]
    for extra, msg in cases:
        with pytest.raises(Exception, match=msg):
            _stage(eq_file, **extra)


def test_search_space_start_point_and_trial_models(tmp_path: Path) -> None:
    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    kind, _, trials, plan = _plan(eq_file)
    assert plan is not None and plan.num_samples == 5 and plan.param_space == {"kind": "meta_tune"}
    alg = plan.tune_config["search_alg"]
    assert type(alg).__name__ == "PruningOptunaSearch" and plan.tune_config["num_samples"] == 5
    first = alg.suggest("t0")  # the equation as given comes first
    assert first["trial"].search_params == {"v0": 0.0} and first["trial"].search_index == 0
    second = alg.suggest("t1")["trial"]
    assert second.search_index == 1 and second.search_params != {"v0": 0.0}
    assert second.equation == trials[0].equation and second.settings == trials[0].settings
    result = kind.run(first["trial"], LocalContext())  # a search trial evaluates one point
    assert set(result.metrics) >= {OBJECTIVE, "search_index"} and json.loads(result.info[PARAMS]) == {
        "v0": 0.0
    }


def test_no_constants_runs_the_one_trial_as_it_is(tmp_path: Path) -> None:
    eq_file = Equation.parse("-g_0").save(tmp_path / "eq.json")
    assert _plan(eq_file)[3] is None


def test_tune_trials_then_select(ray_session: Any, tmp_path: Path) -> None:
    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    kind, stage, _, plan = _plan(eq_file)
    assert plan is not None
    grid = _tuner(plan, tmp_path / "tune", "search").fit()
    results = [grid[i] for i in range(len(grid))]
    assert len(results) == 5 and not any(r.error for r in results)
    idx = sorted(r.config["trial"].search_index for r in results)
    assert idx == [0, 1, 2, 3, 4]  # five distinct Optuna trials, each its own Tune trial
    outcome = _outcome(results)
    outdir = tmp_path / "stage"
    outdir.mkdir()
    lines: list[str] = []
    kind.finalize(stage, outcome, outdir, lines.append)
    best = min(outcome.trials, key=lambda t: t.metrics[OBJECTIVE])
    hist = json.loads((outdir / "history.json").read_text())
    assert hist["details"]["best_run"] == best.run_id and hist["details"]["n_trials"] == 5
    assert hist["details"]["kept"] in ("tuned", "initial") and "val_loss_before" in hist["summary"]
    assert [(label, p.name) for label, p in equations_from_stage(outcome)] == [("tune-s0", "equation.json")]
    tuned = Equation.load(outdir / "equation.json")
    if hist["details"]["kept"] == "tuned":
        assert tuned.provenance["meta_tune"]["search"] == "tune"
    assert outcome.extra["metrics"]["best_value"] == best.metrics[OBJECTIVE] and "Tune trials" in lines[0]
    assert "Tune trials" in kind.summary_lines(stage, outcome)[0]
    # finalize of a reused stage reads the selection back instead of training again
    (outdir / "equation.tex").unlink()
    again = _outcome(results)
    kind.finalize(stage, again, outdir, lines.append)
    assert again.extra["chosen"] == outcome.extra["chosen"] and not (outdir / "equation.tex").exists()


def test_a_stopped_search_resumes_without_redoing_trials(ray_session: Any, tmp_path: Path) -> None:
    from ray import tune

    from harness.engine.trainable import run_trial

    eq_file = sgd_equation(0.01).save(tmp_path / "eq.json")
    _, _, _, plan = _plan(eq_file, settings={"n_trials": 6, "sampler": "cmaes"})
    assert plan is not None
    first = _tuner(plan, tmp_path / "tune", "resume", max_concurrent=1, stop_after=2).fit()
    done = {m["search_index"]: m for m in _finals(first)}
    assert len(done) >= 2 and len(first) < 6, done
    path = str(tmp_path / "tune" / "resume")
    assert tune.Tuner.can_restore(path)
    grid = tune.Tuner.restore(
        path, tune.with_resources(run_trial, {"cpu": 1}), resume_unfinished=True, param_space=plan.param_space
    ).fit()
    again = {m["search_index"]: m for m in _finals(grid)}
    assert sorted(again) == list(range(6)) and len(_finals(grid)) == 6  # numbered on; nothing ran twice
    for i, m in done.items():  # the same result, not a new run of the same point
        assert (again[i]["trial_id"], again[i]["timestamp"]) == (m["trial_id"], m["timestamp"])


def _finals(grid: Any) -> list[dict[str, Any]]:
    """The final reports of a ResultGrid's finished trials."""
    return [dict(r.metrics) for r in grid if r.metrics and r.metrics.get("final")]


def test_trial_cost_is_measured_and_reported_with_the_final_metrics() -> None:
    """Outside Tune, the cost is the process's CPU and wall time since the start, on this host; the final
    report logs the figures as metrics and the node as a tag (``info``), never as a metric."""
    import socket
    import time

    from harness.engine.trainable import TrialCost, final_report
    from harness.stages.base import TrialResult

    before = time.time()
    cost = TrialCost()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:  # burn 50 ms of CPU
        pass
    read = cost.read()
    assert read["cost_cpu_s"] >= 0.05 and read["cost_wall_s"] >= read["cost_cpu_s"] * 0.5
    assert read["node"] == socket.gethostname() and "cost_gpu_s" not in read
    report = final_report(TrialResult(metrics={"loss": 1.0}), read)
    assert set(report["final_keys"]) == {"loss", "cost_cpu_s", "cost_wall_s", "started_at_s"}
    assert before <= report["started_at_s"] <= before + read["cost_wall_s"]
    assert report["info"]["node"] == socket.gethostname() and "node" not in report
