"""harness.cluster without a cluster: storage (paths and URIs), staged inputs, GPU requests, auth lines."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import BaseModel

from harness import cluster
from harness.cluster import ClusterError, Storage, connection
from harness.config.suite import Resources


# -- storage ---------------------------------------------------------------------------------------------
def test_a_local_workdir_is_its_own_cache_and_tune_gets_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Storage("runs")
    assert not s.remote and s.cache == tmp_path / "runs"
    assert s.url("tune", "suite") == f"{tmp_path}/runs/tune/suite"
    s.write_text("hello", "tune", "suite", "x.json")
    assert s.exists("tune", "suite", "x.json") and s.read_text("tune", "suite", "x.json") == "hello"
    with s.local_view("tune", "suite") as local:
        assert (local / "x.json").read_text() == "hello"
    s.move(("tune", "suite"), ("tune", "aside"))
    assert s.exists("tune", "aside", "x.json") and not s.exists("tune", "suite")
    s.rmtree("tune", "aside")
    assert not s.exists("tune", "aside")


def test_a_uri_workdir_is_not_resolved_and_caches_locally(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SL2O_CACHE_DIR", str(tmp_path / "cache"))
    s = Storage(f"file://{tmp_path}/store/")
    assert s.remote and s.uri == f"file://{tmp_path}/store"
    assert s.url("tune", "a") == f"file://{tmp_path}/store/tune/a"  # what Tune's storage_path gets
    assert s.cache.parent == tmp_path / "cache" and s.cache != tmp_path / "store"
    s.write_text("x", "tune", "a", "f")
    assert (tmp_path / "store" / "tune" / "a" / "f").read_text() == "x"


def test_a_workdir_uri_pyarrow_cannot_open_is_one_line() -> None:
    with pytest.raises(
        ClusterError, match=r"--workdir nosuchfs://bucket/x: not a storage URI Ray Tune can use"
    ):
        Storage("nosuchfs://bucket/x")


# -- inputs ----------------------------------------------------------------------------------------------
class _Trial(BaseModel):
    name: str
    sources: list[dict[str, str]]
    root: str | None = None


def test_trial_files_travel_as_storage_uris_and_come_back_as_local_files(tmp_path: Path) -> None:
    ckpt = tmp_path / "driver" / "teacher.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    trial = _Trial(name="t", sources=[{"checkpoint": str(ckpt), "label": "rp"}], root=str(tmp_path))
    # a local workdir: nodes see the same paths (check_storage verifies it), nothing changes
    assert cluster.stage_inputs([trial], Storage(tmp_path / "wd")) == [trial]

    store = Storage(f"file://{tmp_path}/store", cache=tmp_path / "cache")
    (staged,) = cluster.stage_inputs([trial], store)
    uri = staged.sources[0]["checkpoint"]
    assert uri.startswith(f"file://{tmp_path}/store/sl2o-inputs/") and uri.endswith("/teacher.pt")
    assert staged.root == str(tmp_path)  # a directory (a dataset root) is left alone
    assert staged.sources[0]["label"] == "rp"
    # content-addressed: the same file gives the same URI (the trial's key stays the same on a rerun)
    assert cluster.stage_inputs([trial], store)[0] == staged

    data = cluster.localize_inputs(staged.model_dump(), tmp_path / "node")
    local = Path(data["sources"][0]["checkpoint"])
    assert local.is_relative_to(tmp_path / "node") and local.read_bytes() == b"weights"
    assert cluster.localize_inputs({"x": "s3://bucket/other/file"}, tmp_path) == {
        "x": "s3://bucket/other/file"
    }


# -- GPUs ------------------------------------------------------------------------------------------------
def _gpu(gpus: float, have: float, grow: dict | None = None, fallback: bool = False, log=None) -> float:
    return cluster.gpu_request(
        Resources(cpus_per_trial=1, gpus_per_trial=gpus),
        "train",
        fallback,
        log or (lambda m: None),
        cluster_gpus=have,
        max_resources=lambda: grow,
    )


def test_a_gpu_request_on_a_cluster_without_gpus_is_an_error_naming_the_fixes() -> None:
    assert _gpu(0, 0) == 0.0
    assert _gpu(1, 2) == 1.0
    with pytest.raises(ClusterError) as err:
        _gpu(1, 0)
    msg = str(err.value)
    assert "stage 'train' asks for 1 GPU(s) per trial, but the Ray cluster has 0" in msg
    assert "--allow-cpu-fallback" in msg and "gpus_per_trial: 0" in msg and "\n" not in msg


def test_cpu_fallback_and_an_autoscaler_that_can_add_gpus() -> None:
    lines: list[str] = []
    assert _gpu(1, 0, fallback=True, log=lines.append) == 0.0
    assert "running on CPUs (--allow-cpu-fallback)" in lines[-1]
    assert _gpu(1, 0, grow={"GPU": 8, "CPU": 64}, log=lines.append) == 1.0  # wait for the autoscaler
    assert "autoscaler can add GPU nodes" in lines[-1]
    with pytest.raises(ClusterError):
        _gpu(1, 0, grow={"CPU": 64})  # an autoscaler without GPU node types


def test_run_suite_refuses_a_gpu_request_on_local_ray_before_mlflow(ray_session, tmp_path: Path) -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine.runner import RunOptions, run_suite

    if ray_session.cluster_resources().get("GPU", 0) > 0:
        pytest.skip("this machine has a GPU")
    suite = load_suite_dict(
        {
            "name": "gpu-ask",
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1},
            "stages": [
                {"kind": "evaluate", "name": "e", "optimizees": [{"name": "quadratic_cos", "steps": 5}],
                 "optimizers": [{"family": "adam", "lr": 0.01}], "seeds": [0]}
            ],
        }
    )  # fmt: skip
    db = tmp_path / "m.db"
    with pytest.raises(ClusterError, match="asks for 1 GPU"):
        run_suite(
            suite, RunOptions(tracking_uri=f"sqlite:///{db}", workdir=str(tmp_path), log=lambda m: None)
        )
    assert not db.exists()  # nothing created in MLflow


# -- connecting ------------------------------------------------------------------------------------------
def test_auth_hint_says_what_to_set(monkeypatch) -> None:
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    line = cluster.auth_hint("10.0.0.1:6379")
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line and "\n" not in line
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "token differs from the cluster's" in cluster.auth_hint("10.0.0.1:6379")


def test_an_auth_error_is_found_in_ray_inits_exception_chain() -> None:
    class AuthenticationError(Exception):
        pass

    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")
        except AuthenticationError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 1.2.3.4:6379") from inner
    except ConnectionError as err:
        assert cluster.is_auth_error(err)
    assert not cluster.is_auth_error(ConnectionError("refused"))


def test_connect_turns_ray_inits_auth_failure_into_one_line(monkeypatch) -> None:
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(connection, "probe", lambda address: None)  # where connect looks it up

    def init(**kwargs):
        raise ConnectionError("x") from RuntimeError("InvalidAuthToken: Authentication token is missing")

    with pytest.raises(ClusterError, match="requires token authentication"):
        cluster.connect("auto", init=init)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_probe_of_an_address_where_nothing_listens_is_one_line_within_seconds(scheme: str) -> None:
    import time

    start = time.time()
    with pytest.raises(ClusterError, match="answers at"):
        cluster.probe(f"{scheme}127.0.0.1:{_closed_port()}", timeout=2)
    assert time.time() - start < 10


def test_run_suite_connects_to_ray_before_it_creates_anything_in_mlflow(tmp_path: Path, monkeypatch) -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine import runner

    def refused(address):
        raise ClusterError(cluster.auth_hint(str(address)))

    monkeypatch.setattr(runner, "init_ray", refused)
    suite = load_suite_dict(
        {"name": "s", "stages": [{"kind": "evaluate", "name": "e", "optimizees": [{"name": "quadratic_cos"}],
                                  "optimizers": [{"family": "adam", "lr": 0.01}], "seeds": [0]}]}
    )  # fmt: skip
    db = tmp_path / "m.db"
    opts = runner.RunOptions(address="10.0.0.9:6379", tracking_uri=f"sqlite:///{db}", workdir=str(tmp_path))
    with pytest.raises(ClusterError, match="RAY_AUTH_MODE=token"):
        runner.run_suite(suite, opts)
    assert not db.exists()
