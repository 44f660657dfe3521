"""Tracking through MLflow outages, against a real ``mlflow server`` process that the tests crash
(SIGKILL to its own process group) and restart on the same port and store.

MLflow's own HTTP retries are set to none here, so an outage of a few seconds is already longer than
the client's retry budget: what the harness adds (queue, retry, journal, replay) is what is tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException, RestException

from harness import tracking
from harness.stages.outputs import TAG
from harness.testing.mlflow_server import MlflowServer
from harness.tracking.delivery import queue as tracking_queue
from harness.tracking.delivery.ops import HANDLE_TAG, execute, is_transient
from harness.tracking.delivery.spool import SUFFIX

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, server: MlflowServer):
    """MLflow gives up at once; the harness retries every 0.5 s and reports after 0.5 s; fresh writers."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("SL2O_TRACKING_RETRY_MAX_S", "0.5")
    monkeypatch.setenv("SL2O_TRACKING_NOTICE_S", "0.5")
    monkeypatch.setattr(tracking_queue, "_WRITERS", {})
    monkeypatch.setattr(tracking_queue, "_ROOTS", {})
    yield
    if server.proc is None:
        server.start()


def _setup(uri: str, spool: Path, name: str) -> tuple[Any, str, str]:
    client = tracking.init_tracking(uri, spool_dir=spool)
    exp = tracking.ensure_experiment(client, name, uri)
    parent = tracking.start_run(client, exp, "stage", {f"{TAG}.kind": "stage"})
    return client, exp, parent


def _tracker(uri: str, exp: str, parent: str) -> tracking.TrialTracker:
    return tracking.TrialTracker(
        uri,
        exp,
        parent,
        {f"{TAG}.stage": "s", f"{TAG}.stage_key": "k"},
        lambda cfg: {f"{TAG}.trial_key": f"key-{cfg['x']}", f"{TAG}.label": f"x={cfg['x']}"},
        lambda cfg: {"x": str(cfg["x"])},
    )


def _curve(steps: list[int]) -> dict[str, Any]:
    return {"curve_steps": steps, "curve_train_loss": [1.0 / s for s in steps]}


def _trial_runs(client: Any, exp: str) -> list[Any]:
    return tracking.find_runs(client, [exp], f"tags.`{TAG}.kind` = 'trial'")


def _journals(spool: Path) -> list[Path]:
    return sorted(spool.rglob(f"*{SUFFIX}"))


def test_trial_writes_are_queued_through_an_outage_and_delivered_in_order(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture, fake_trial: Any, fake_checkpoint: Any
) -> None:
    spool = tmp_path / "spool"
    client, exp, parent = _setup(server.uri, spool, "outage")
    tr = _tracker(server.uri, exp, parent)
    a = fake_trial("a", {"x": 1})
    tr.on_trial_start(0, [], a)
    tr.on_trial_result(0, [], a, _curve([1, 2, 3]))
    assert tracking.writer_for(server.uri).wait(30)

    server.kill()
    art = tmp_path / "ckpt" / "artifacts"
    art.mkdir(parents=True)
    (art / "model.json").write_text("{}")
    a.checkpoint = fake_checkpoint(str(tmp_path / "ckpt"))
    t0 = time.monotonic()
    for s in range(4, 40):  # Tune's loop: each callback returns at once, the server being gone
        tr.on_trial_result(0, [], a, _curve([s]))
    tr.on_trial_result(0, [], a, {"final": True, "final_keys": ["loss"], "loss": 0.5, "status": "ok"})
    tr.on_trial_complete(0, [], a)
    assert time.monotonic() - t0 < 2.0
    writer = tracking.writer_for(server.uri)
    for i in range(30):  # one run's tag rewritten in order: the last value must win
        writer.submit({"kind": "call", "method": "set_tag", "args": [parent, "order", str(i)]})
    assert writer.pending >= 30 and _journals(spool)
    shutil.rmtree(tmp_path / "ckpt")  # Tune may delete a checkpoint before its artifacts are delivered
    time.sleep(3)  # longer than MLflow's retry budget (none here)
    assert not writer.wait(0.1)
    server.start()

    (run,) = _trial_runs(client, exp)  # waits for the queue first
    assert run.info.status == "FINISHED" and run.data.tags[f"{TAG}.status"] == "ok"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 40))
    assert run.data.metrics["loss"] == 0.5 and run.data.params == {"x": "1"}
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["model.json"]
    assert client.get_run(parent).data.tags["order"] == "29"
    assert writer.pending == 0 and not _journals(spool)
    assert not list(spool.rglob("snapshots/*"))
    err = capsys.readouterr().err
    assert f"MLflow at {server.uri} unreachable" in err and "reachable again" in err


def test_a_runner_call_waits_through_an_outage_and_creates_its_run_once(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    client, exp, parent = _setup(server.uri, tmp_path / "spool", "wait")
    server.kill()
    with pytest.raises(MlflowException):  # a client that only reads (a report) is told at once
        tracking.ResilientClient(server.uri).search_experiments()
    restart = threading.Timer(3.0, server.start)
    restart.start()
    try:
        t0 = time.monotonic()
        rid = tracking.start_run(client, exp, "stage 2", {f"{TAG}.kind": "stage"}, parent)
        client.set_tag(rid, "after", "outage")
        assert time.monotonic() - t0 >= 3.0
    finally:
        restart.join()
    runs = tracking.find_runs(client, [exp], f"tags.`{TAG}.kind` = 'stage'")
    assert sorted(r.info.run_id for r in runs) == sorted([parent, rid])
    assert client.get_run(rid).data.tags["after"] == "outage"
    assert "unreachable for" in capsys.readouterr().err
    # a refusal is not waited out
    with pytest.raises(MlflowException):
        client.get_run("0" * 32)


_DRIVER = """
import os, signal, sys
from harness import tracking
from harness.stages.outputs import TAG
from harness.tracking.delivery.queue import set_spool_root
uri, spool, exp, parent, ckpt, how = sys.argv[1:]
set_spool_root(uri, spool)

class T:
    trial_id = "t1"
    config = {"x": 7}
    error_file = None
    class checkpoint:
        path = ckpt

tr = tracking.TrialTracker(uri, exp, parent, {f"{TAG}.stage": "s"},
    lambda c: {f"{TAG}.trial_key": "key-7", f"{TAG}.label": "x=7"}, lambda c: {"x": "7"})
tr.on_trial_start(0, [], T)
tr.on_trial_result(0, [], T, {"curve_steps": [1, 2], "curve_train_loss": [2.0, 1.0]})
tr.on_trial_result(0, [], T, {"final": True, "final_keys": ["loss"], "loss": 1.0, "status": "ok"})
tr.on_trial_complete(0, [], T)
if how == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_writes_a_driver_could_not_deliver_are_delivered_by_the_next_one(
    server: MlflowServer, tmp_path: Path, how: str
) -> None:
    spool = tmp_path / "spool"
    client, exp, parent = _setup(server.uri, spool, f"replay-{how}")
    art = tmp_path / "ckpt" / "artifacts"
    art.mkdir(parents=True)
    (art / "eq.json").write_text("{}")
    server.kill()
    env = dict(os.environ, SL2O_TRACKING_EXIT_WAIT="1", PYTHONPATH=str(ROOT))
    args = [server.uri, str(spool), exp, parent, str(tmp_path / "ckpt"), how]
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, *args], capture_output=True, text=True, timeout=120, env=env
    )
    if how == "exit":
        assert done.returncode == 0, done.stderr
        assert "tracking writes kept in" in done.stderr
    else:
        assert done.returncode == -9
    (journal,) = _journals(spool)
    assert "key-7" in journal.read_text()
    shutil.rmtree(tmp_path / "ckpt")  # the journal's snapshot of the artifacts is what gets delivered
    server.start()

    # a read-only user of the store delivers nothing
    assert not _trial_runs(client, exp) and _journals(spool)
    # the next driver's first write delivers them, before its own
    client2 = tracking.init_tracking(server.uri, spool_dir=spool)
    client2.set_tag(parent, "resumed", "yes")
    (run,) = _trial_runs(client2, exp)
    assert run.info.status == "FINISHED" and run.data.metrics["loss"] == 1.0
    assert [m.value for m in client2.get_metric_history(run.info.run_id, "train_loss")] == [2.0, 1.0]
    assert [f.path for f in client2.list_artifacts(run.info.run_id)] == ["eq.json"]
    assert not _journals(spool)


def test_a_replayed_completion_of_a_trial_recorded_meanwhile_is_dropped(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    client, exp, parent = _setup(uri, tmp_path / "spool", "once")
    key_tags = {f"{TAG}.kind": "trial", f"{TAG}.trial_key": "key-1"}
    other = tracking.start_run(client, exp, "t", key_tags, parent)
    client.set_terminated(other, status="FINISHED")
    mine = tracking.start_run(client, exp, "t", {**key_tags, HANDLE_TAG: "h1"}, parent)
    bindings: dict[str, str | None] = {"h1": mine}
    op = {"kind": "complete", "handle": "h1", "trial_key": "key-1", "experiment_id": exp, "replayed": True}
    execute(client, op, bindings, bindings.__setitem__)
    assert [r.info.run_id for r in _trial_runs(client, exp)] == [other] and bindings["h1"] is None
    # and a replayed start of that trial creates nothing
    start = {"kind": "start", "handle": "h2", "trial_key": "key-1", "experiment_id": exp, "tags": {}}
    execute(client, {**start, "name": "t", "parent_run_id": parent}, bindings, bindings.__setitem__)
    assert bindings["h2"] is None and len(_trial_runs(client, exp)) == 1


def test_what_is_worth_waiting_for() -> None:
    import requests

    assert is_transient(MlflowException("API request to http://h/x failed with exception Max retries"))
    assert is_transient(MlflowException("API request to http://h/x failed with timeout exception t."))
    assert is_transient(requests.exceptions.ConnectionError("refused"))
    assert is_transient(MlflowException("(sqlite3.OperationalError) database is locked"))
    assert not is_transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}))
    assert not is_transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}))
    assert not is_transient(ValueError("bad"))


def test_the_tracker_pickles_without_its_attempts_and_restores_older_state(tmp_path: Path) -> None:
    import pickle

    tr = tracking.TrialTracker(f"sqlite:///{tmp_path}/m.db", "1", "p", {}, dict, dict)
    tr._attempts["t"] = ("h", "k", "label")
    back = pickle.loads(pickle.dumps(tr))
    assert back._attempts == {} and back.tracking_uri == tr.tracking_uri
    # state Tune saved with an earlier version of the tracker (a client and run ids)
    old = {k: v for k, v in tr.__dict__.items() if k != "_attempts"}
    fresh = tracking.TrialTracker.__new__(tracking.TrialTracker)
    fresh.__setstate__({**old, "_client": None, "_runs": {}})
    assert fresh._attempts == {} and not hasattr(fresh, "_runs")
