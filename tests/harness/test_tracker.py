"""The MLflow tracker records each trial exactly once, whatever Tune does with its attempts (no Ray run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import tracking
from harness.stages.outputs import TAG


def _tracker(uri: str, client: Any, exp: str, parent: str) -> tracking.TrialTracker:
    return tracking.TrialTracker(
        uri,
        exp,
        parent,
        {f"{TAG}.stage": "s", f"{TAG}.stage_key": "k"},
        lambda cfg: {f"{TAG}.trial_key": f"key-{cfg['x']}", f"{TAG}.label": f"x={cfg['x']}"},
        lambda cfg: {"x": str(cfg["x"])},
    )


def _curve(steps: list[int], values: list[float]) -> dict[str, Any]:
    return {"curve_steps": steps, "curve_train_loss": values}


def _trial_runs(client: Any, exp: str) -> list[Any]:
    return tracking.find_runs(client, [exp], f"tags.`{TAG}.kind` = 'trial'")


def test_retry_replaces_the_failed_attempt_and_a_rerun_of_a_finished_trial_is_not_recorded(
    tmp_path: Path, fake_trial: Any
) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    client = tracking.init_tracking(uri)
    exp = tracking.ensure_experiment(client, "t", uri)
    parent = tracking.start_run(client, exp, "stage", {f"{TAG}.kind": "stage"})
    tr = _tracker(uri, client, exp, parent)
    a = fake_trial("a", {"x": 1})

    tr.on_trial_start(0, [], a)
    tr.on_trial_result(0, [], a, _curve([1, 10], [5.0, 4.0]))
    tr.on_trial_error(0, [], a)
    tr.on_trial_recover(0, [], a)  # Tune retries it within the same run
    tr.on_trial_start(0, [], a)
    tr.on_trial_result(0, [], a, _curve([1, 10], [3.0, 2.0]))
    tr.on_trial_result(0, [], a, {"final": True, "final_keys": ["loss"], "loss": 2.0, "status": "ok"})
    tr.on_trial_complete(0, [], a)
    (run,) = _trial_runs(client, exp)
    assert run.info.status == "FINISHED" and run.data.tags[f"{TAG}.trial_key"] == "key-1"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (10, 2.0)]  # the retry's curve only

    # a new driver (Tune lost track of the completion): the same trial runs again, and is not re-recorded
    tr2 = _tracker(uri, client, exp, parent)
    a2 = fake_trial("a-again", {"x": 1})
    tr2.on_trial_start(0, [], a2)
    tr2.on_trial_result(0, [], a2, _curve([1], [9.0]))
    tr2.on_trial_complete(0, [], a2)
    (again,) = _trial_runs(client, exp)
    assert again.info.run_id == run.info.run_id
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")] == [3.0, 2.0]

    # an attempt the killed driver left RUNNING is replaced by the next attempt
    b = fake_trial("b", {"x": 2})
    tr2.on_trial_start(0, [], b)
    tr2.on_trial_result(0, [], b, _curve([1], [7.0]))
    tr3 = _tracker(uri, client, exp, parent)
    b2 = fake_trial("b-again", {"x": 2})
    tr3.on_trial_start(0, [], b2)
    tr3.on_trial_result(0, [], b2, _curve([1], [6.0]))
    tr3.on_trial_complete(0, [], b2)
    runs = {r.data.tags[f"{TAG}.trial_key"]: r for r in _trial_runs(client, exp)}
    assert set(runs) == {"key-1", "key-2"}
    assert [m.value for m in client.get_metric_history(runs["key-2"].info.run_id, "train_loss")] == [6.0]


def test_a_trials_horizon_comes_from_its_tag_else_its_config() -> None:
    import json

    def config(**optimizee: Any) -> dict[str, str]:
        return {f"{TAG}.config": json.dumps({"optimizee": {"name": "mlp", **optimizee}, "seed": 0})}

    assert tracking.trial_horizon({f"{TAG}.horizon": "300 steps", **config(steps=1)}) == "300 steps"
    # runs recorded before the tag existed: read from the trial's config
    assert tracking.trial_horizon(config(steps=1500)) == "1500 steps"
    assert tracking.trial_horizon(config(epochs=1.0)) == "1 epoch"
    assert tracking.trial_horizon(config(epochs=2.5)) == "2.5 epochs"
    assert tracking.trial_horizon(config()) == ""  # the optimizee's default budget
    assert tracking.trial_horizon({f"{TAG}.config": "not json"}) == tracking.trial_horizon({}) == ""


def test_the_sr_dataset_is_an_input_of_the_collect_run_and_of_each_distill_run(
    tmp_path: Path, fake_trial: Any, fake_checkpoint: Any
) -> None:
    import json
    import shutil

    from harness.stages.collect import collect

    uri = f"sqlite:///{tmp_path}/m.db"
    client = tracking.init_tracking(uri)
    exp = tracking.ensure_experiment(client, "t", uri)
    parent = tracking.start_run(client, exp, "stage", {f"{TAG}.kind": "stage"})
    tr = _tracker(uri, client, exp, parent)
    ds = collect(
        {"rule": "sgd", "kwargs": {"lr": 0.01}, "label": "sgd-teacher"},
        [{"name": "quadratic_cos", "steps": 40}],
        n_samples=300,
    )
    art = tmp_path / "ckpt" / "artifacts"
    ds.save(art / "dataset.npz")
    c = fake_trial("c", {"x": 1}, checkpoint=fake_checkpoint(str(tmp_path / "ckpt")))
    tr.on_trial_start(0, [], c)
    tr.on_trial_result(0, [], c, {"final": True, "final_keys": ["n_train"], "n_train": 1.0, "status": "ok"})
    tr.on_trial_complete(0, [], c)
    # a distill trial reads a downloaded copy of that file; one naming a missing file logs no input
    copy = tmp_path / "download" / "dataset.npz"
    copy.parent.mkdir()
    shutil.copy(art / "dataset.npz", copy)
    d = fake_trial("d", {"x": 2, "trial": {"dataset": str(copy), "seed": 0}})
    gone = fake_trial("g", {"x": 3, "trial": {"dataset": str(tmp_path / "gone.npz")}})
    tr.on_trial_start(0, [], d)
    tr.on_trial_start(0, [], gone)
    runs = {r.data.tags[f"{TAG}.trial_key"]: client.get_run(r.info.run_id) for r in _trial_runs(client, exp)}

    (collected,) = runs["key-1"].inputs.dataset_inputs
    (training,) = runs["key-2"].inputs.dataset_inputs
    assert runs["key-3"].inputs.dataset_inputs == []
    assert [(t.key, t.value) for t in collected.tags] == [("mlflow.data.context", "collected")]
    assert [(t.key, t.value) for t in training.tags] == [("mlflow.data.context", "training")]
    got = collected.dataset
    assert got.name == training.dataset.name == "sgd-teacher"
    assert got.digest == training.dataset.digest and len(got.digest) == 16
    source = json.loads(got.source)["uri"]
    assert got.source_type == "local" and source.startswith("file://")
    assert source == f"{runs['key-1'].info.artifact_uri}/dataset.npz"
    profile = json.loads(got.profile)
    assert profile == {"n_train": len(ds.y_train), "n_val": len(ds.y_val), "n_inputs": len(ds.names)}
    columns = [c["name"] for c in json.loads(got.schema)["mlflow_colspec"]]
    assert columns == [*ds.names, "update"]


def test_a_full_disk_while_creating_the_store_is_one_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own error, as SQLAlchemy and MLflow wrap it when the disk fills during the schema migration
    (reproduced by hand on a 300 KB tmpfs: the same message); the half-created file is removed."""
    import sqlite3

    import sqlalchemy.exc
    from mlflow.tracking import MlflowClient

    from harness.tracking.store import StoreError, init_tracking

    def full(self: MlflowClient, *args: object, **kwargs: object) -> None:
        (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00 half written")
        raise sqlalchemy.exc.OperationalError(
            "CREATE INDEX ...", {}, sqlite3.OperationalError("database or disk is full")
        )

    monkeypatch.setattr(MlflowClient, "search_experiments", full)
    with pytest.raises(
        StoreError,
        match=r"cannot create the MLflow store .*mlflow.db: database or disk is full; "
        r"free space on its disk or pass --tracking-uri; nothing was left behind",
    ):
        init_tracking(f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()
