"""Ray cluster glue: connecting, token-auth errors, GPU requests, the workdir as Tune storage, input files.

* **Connecting** (:func:`connect`): local Ray, a cluster address (``host:port`` or ``auto``) or Ray Client
  (``ray://host:10001``). An explicit address is probed first with one gRPC call (Ray's own channel, which
  carries the auth token when ``RAY_AUTH_MODE=token``), so a refused token or an unreachable head is one
  line at once (:class:`ClusterError`), not 20-30 s of retries and a traceback.
* **GPUs** (:func:`gpu_request`): a GPU request on a cluster without GPUs is an error, unless the user
  allows the CPU fallback or the cluster's autoscaler can add GPU nodes.
* **Storage** (:class:`Storage`): ``--workdir`` is a local directory or any URI Ray Tune's ``storage_path``
  accepts (what ``pyarrow.fs.FileSystem.from_uri`` opens: ``s3://``, ``gs://``, ``hdfs://``, ``file://``).
  :func:`check_storage` runs one tiny task pinned on every node (``NodeAffinitySchedulingStrategy``) that
  reads a file the driver wrote there and writes one back, and names the node that cannot.
* **Inputs**: with a URI workdir, files that trials read (teacher checkpoints, datasets, equations) are
  copied into ``<workdir>/sl2o-inputs/<sha256>/`` and trials get their URIs (:func:`stage_inputs`); the
  trainable copies them to its node before the stage runs (:func:`localize_inputs`).

Ray Client runs ``Tuner.fit`` on the head node (Tune's own rule), so callbacks run there:
:class:`ClientLog` carries the progress lines back to the client through a Ray queue.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from harness.config.suite import Resources
from harness.engine.progress import Progress

#: the folder of staged trial inputs in the workdir (trainables recognise staged URIs by it)
INPUTS_DIR = "sl2o-inputs"
#: how long the per-node storage check and a connection probe may take
CHECK_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 5.0


class ClusterError(ValueError):
    """A cluster cannot be used as asked (connection, auth, storage, GPUs): one line saying what to do."""


# ---------------------------------------------------------------------------------------------
# connecting
# ---------------------------------------------------------------------------------------------
def is_client_address(address: str | None) -> bool:
    return bool(address) and str(address).startswith("ray://")


def client_mode() -> bool:
    """Whether this process talks to Ray through Ray Client (Tune then runs ``fit`` on the head)."""
    from ray.util.client import ray as client_ray

    return bool(client_ray.is_connected())


def auth_hint(address: str) -> str:
    """The one line to say when ``address`` refuses this process's token."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode.lower() != "token":
        return (
            f"the Ray cluster at {address} requires token authentication (InvalidAuthToken): set "
            "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN=<token>, or the head node's "
            "~/.ray/auth_token copied here or named by RAY_AUTH_TOKEN_PATH)"
        )
    return (
        f"the Ray cluster at {address} refused this machine's token (InvalidAuthToken): RAY_AUTH_MODE=token "
        "is set, but the token differs from the cluster's; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to "
        "the head node's ~/.ray/auth_token"
    )


def _grpc_code_name(err: BaseException) -> str:
    code: Any = getattr(err, "code", None)
    try:
        return str(getattr(code(), "name", "")) if callable(code) else ""
    except Exception:  # noqa: BLE001 - not a grpc.RpcError after all
        return ""


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One authenticated gRPC call to a GCS (``host:port``) or a Ray Client server (``ray://host:port``).

    Raises :class:`ClusterError` when the token is refused or nothing answers; returns quietly when the
    call succeeds or when the probe itself cannot be made (then ``ray.init`` reports what is wrong).
    """
    try:
        import grpc
        from ray._private.grpc_utils import init_grpc_channel
    except ImportError:
        return
    target = address[len("ray://") :] if is_client_address(address) else address
    channel = init_grpc_channel(target, asynchronous=False)
    try:
        if is_client_address(address):
            from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

            pb: Any = ray_client_pb2
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=timeout
            )
        else:
            from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

            gcs: Any = gcs_service_pb2
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs.GetClusterIdRequest(), timeout=timeout
            )
    except grpc.RpcError as err:
        code = _grpc_code_name(err)
        details = str(getattr(err, "details", lambda: "")() or "")
        if code == "UNAUTHENTICATED" or "InvalidAuthToken" in details:
            raise ClusterError(auth_hint(address)) from None
        if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            what = "Ray Client server" if is_client_address(address) else "Ray cluster (GCS)"
            raise ClusterError(
                f"no {what} answers at {address} within {timeout:.0f}s ({code.lower()}); check the address "
                "and port (a cluster: the head's --port, default 6379; Ray Client: ray://head:10001) and "
                "that this machine can reach it"
            ) from None
    finally:
        channel.close()


def _is_auth_error(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def connect(address: str | None, init: Callable[..., Any] | None = None) -> None:
    """``ray.init`` for a local Ray (no address) or a cluster, failing in one line (:class:`ClusterError`)."""
    init = init or ray.init
    if not address:
        init()
        return
    if address != "auto":
        probe(address)
    tries = 2 if is_client_address(address) else 1
    for attempt in range(tries):
        try:
            init(address=address, log_to_driver=False)
            return
        except Exception as err:  # noqa: BLE001 - turned into one line below
            if _is_auth_error(err):
                raise ClusterError(auth_hint(address)) from None
            # Ray Client's per-client server can die while it is forked on the head (ray-project/ray#63202)
            if attempt + 1 < tries and "Starting Ray client server failed" in str(err):
                time.sleep(1.0)
                continue
            first = " ".join(str(err).split())[:300]
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: {first}") from None


# ---------------------------------------------------------------------------------------------
# cluster facts and GPUs
# ---------------------------------------------------------------------------------------------
@dataclass
class NodeInfo:
    node_id: str
    ip: str
    resources: dict[str, float]


def alive_nodes() -> list[NodeInfo]:
    """The cluster's alive nodes (``ray.nodes()``), those that can run tasks (any CPU or GPU)."""
    out = []
    for n in ray.nodes():
        res = dict(n.get("Resources") or {})
        if n.get("Alive") and (res.get("CPU", 0) > 0 or res.get("GPU", 0) > 0):
            out.append(NodeInfo(n["NodeID"], str(n.get("NodeManagerAddress", "?")), res))
    return out


def _autoscaler_max_resources() -> dict[str, float] | None:
    """What the cluster's autoscaler config could grow to (``None``: no autoscaler config)."""
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
        return None if found is None else {k: float(v) for k, v in found.items()}
    except Exception:  # noqa: BLE001 - an older Ray or no autoscaler
        return None


def autoscaler_max_resources() -> dict[str, float] | None:
    """The autoscaler's maximum resources, asked on the cluster (works through Ray Client too)."""
    if not client_mode():
        return _autoscaler_max_resources()
    task = ray.remote(num_cpus=0)(_autoscaler_max_resources)
    return ray.get(task.remote(), timeout=CHECK_TIMEOUT_S)


def gpu_request(
    res: Resources,
    stage: str,
    allow_cpu_fallback: bool,
    log: Callable[[str], None] = print,
    cluster_gpus: float | None = None,
    max_resources: Callable[[], dict[str, float] | None] = autoscaler_max_resources,
) -> float:
    """The GPUs to ask per trial: ``res.gpus_per_trial`` if the cluster has (or can add) GPUs.

    Without GPUs: 0 with ``allow_cpu_fallback`` (said once in the log), else :class:`ClusterError`.
    """
    want = float(res.gpus_per_trial)
    if want <= 0:
        return 0.0
    have = float(ray.cluster_resources().get("GPU", 0.0)) if cluster_gpus is None else cluster_gpus
    if have >= want:
        return want
    grow = (max_resources() or {}).get("GPU", 0)
    if grow and float(grow) >= want:
        log(f"[{stage}] no GPU node is up yet; the cluster's autoscaler can add GPU nodes (up to {grow:g})")
        return want
    if allow_cpu_fallback:
        log(f"[{stage}] the cluster has {have:g} GPU(s); running on CPUs (--allow-cpu-fallback)")
        return 0.0
    raise ClusterError(
        f"stage {stage!r} asks for {want:g} GPU(s) per trial, but the Ray cluster has {have:g} and no "
        "autoscaler that can add GPU nodes; add GPU nodes, set resources.gpus_per_trial: 0, or pass "
        "--allow-cpu-fallback to run on CPUs"
    )


# ---------------------------------------------------------------------------------------------
# storage: the workdir, a local directory or a URI
# ---------------------------------------------------------------------------------------------
def is_uri(workdir: str | os.PathLike[str]) -> bool:
    return "://" in str(workdir)


def _fs_from_uri(uri: str) -> tuple[Any, str]:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


class Storage:
    """The workdir as Ray Tune storage: Tune state under ``tune/``, staged inputs under ``sl2o-inputs/``.

    ``cache`` is always a local directory (downloaded artifacts, the default MLflow DB): the workdir
    itself when it is a local path, else ``$SL2O_CACHE_DIR`` or ``~/.cache/symbolic-l2o/<hash of URI>``.
    """

    def __init__(self, workdir: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> None:
        text = str(workdir)
        if is_uri(text):
            try:
                self.fs, self.root = _fs_from_uri(text)
            except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds
                reason = " ".join(str(err).split())[:200]
                raise ClusterError(
                    f"--workdir {text}: not a storage URI Ray Tune can use ({reason}); give a local "
                    "directory or a URI such as s3://bucket/path, gs://bucket/path or file:///shared/path"
                ) from None
            self.uri = text.rstrip("/")
            self.root = self.root.rstrip("/")
            self.remote = True
            digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
            default = Path(os.environ.get("SL2O_CACHE_DIR") or Path.home() / ".cache" / "symbolic-l2o") / digest
            self.cache = Path(cache).resolve() if cache else default
        else:
            import pyarrow.fs

            path = Path(text).expanduser().resolve()
            self.fs, self.root, self.uri = pyarrow.fs.LocalFileSystem(), str(path), str(path)
            self.remote = False
            self.cache = Path(cache).resolve() if cache else path

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    # -- names ----------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """The filesystem path (for ``self.fs``) of ``parts`` under the workdir."""
        return "/".join([self.root, *parts])

    def url(self, *parts: str) -> str:
        """``parts`` under the workdir as Tune's ``storage_path`` takes it (a URI or an absolute path)."""
        return "/".join([self.uri, *parts])

    # -- operations -----------------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(self.path(*parts)).type != pyarrow.fs.FileType.NotFound

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as fh:
            return fh.read().decode()

    def write_text(self, text: str, *parts: str) -> None:
        target = self.path(*parts)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(target) as fh:
            fh.write(text.encode())

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def rmtree(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))

    def move(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        self.fs.move(self.path(*src), self.path(*dst))

    def upload(self, local: Path, *parts: str) -> None:
        import pyarrow.fs

        target = self.path(*parts)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pyarrow.fs.copy_files(
            str(local), target, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=self.fs
        )

    @contextmanager
    def local_view(self, *parts: str) -> Iterator[Path]:
        """A local directory with the tree at ``parts`` (itself when local; a downloaded copy otherwise)."""
        if not self.remote or isinstance(self.fs, _local_fs_type()):
            yield Path(self.path(*parts))
            return
        import pyarrow.fs

        with tempfile.TemporaryDirectory(prefix="sl2o-view-") as tmp:
            dest = Path(tmp) / "tree"
            pyarrow.fs.copy_files(
                self.path(*parts), str(dest), source_filesystem=self.fs,
                destination_filesystem=pyarrow.fs.LocalFileSystem(),
            )  # fmt: skip
            yield dest


def _local_fs_type() -> type:
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem


def _probe_storage(uri_or_path: str, driver_file: str, token: str, node_file: str) -> tuple[bool, str]:
    """On one node: read the driver's probe file, write this node's; ``(ok, why not)``."""
    try:
        fs, root = _fs_from_uri(uri_or_path) if is_uri(uri_or_path) else (_local(), uri_or_path)
        with fs.open_input_stream(f"{root}/{driver_file}") as fh:
            got = fh.read().decode()
        if got != token:
            return False, f"it reads other content at {uri_or_path}/{driver_file} (not the same storage)"
    except Exception as err:  # noqa: BLE001 - reported as the node's reason
        return False, f"it cannot read {uri_or_path}/{driver_file}: {' '.join(str(err).split())[:200]}"
    try:
        with fs.open_output_stream(f"{root}/{node_file}") as fh:
            fh.write(token.encode())
    except Exception as err:  # noqa: BLE001
        return False, f"it cannot write under {uri_or_path}: {' '.join(str(err).split())[:200]}"
    return True, ""


def _local() -> Any:
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem()


def check_storage(storage: Storage, nodes: list[NodeInfo] | None = None, timeout: float = CHECK_TIMEOUT_S) -> int:
    """Check every node can read and write the workdir; :class:`ClusterError` names the first that cannot.

    One task per node, pinned there (``NodeAffinitySchedulingStrategy``, no CPU asked, so busy nodes
    answer too); each reads a file this driver wrote and writes one that the driver then reads. Returns
    the number of nodes checked.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes() if nodes is None else nodes
    token = uuid.uuid4().hex
    folder = f".sl2o-check/{token}"
    try:
        storage.write_text(token, folder, "driver")
    except Exception as err:  # noqa: BLE001
        raise ClusterError(f"--workdir {storage.uri}: this machine cannot write there: {err}") from None
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_probe_storage)
        refs = {
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(
                storage.uri, f"{folder}/driver", token, f"{folder}/{n.node_id}"
            ): n
            for n in nodes
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in pending:
            n = refs[ref]
            raise ClusterError(
                f"node {n.node_id[:12]} ({n.ip}) did not answer the workdir check within {timeout:.0f}s; "
                "is it alive and able to start a Python worker?"
            )
        for ref in ready:
            n = refs[ref]
            ok, why = ray.get(ref)
            if ok:
                try:
                    ok = storage.read_text(folder, n.node_id) == token
                    why = "" if ok else "the driver reads other content from what it wrote"
                except Exception as err:  # noqa: BLE001
                    ok, why = False, f"the driver cannot read what it wrote: {err}"
            if not ok:
                raise ClusterError(
                    f"node {n.node_id[:12]} ({n.ip}) cannot use --workdir {storage.uri}: {why}; use storage "
                    "every node mounts at the same path, or a URI such as s3://bucket/path"
                )
    finally:
        try:
            storage.rmtree(".sl2o-check", token)
        except Exception:  # noqa: BLE001 - a leftover probe folder is harmless
            pass
    return len(nodes)


# ---------------------------------------------------------------------------------------------
# input files of trials
# ---------------------------------------------------------------------------------------------
def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(v, fn) for v in value)
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_inputs(trials: list[Any], storage: Storage) -> list[Any]:
    """With a URI workdir: every local file a trial names is copied to storage and named by its URI.

    A string field that is an absolute path of an existing file (a checkpoint, a dataset, an equation)
    becomes ``<workdir>/sl2o-inputs/<sha256>/<name>`` (content-addressed: uploaded once, same URI on every
    rerun). Directories (dataset roots) are left as they are: they must exist on every node.
    """
    if not storage.remote:
        return trials
    done: dict[str, str] = {}

    def swap(s: str) -> str:
        if s in done:
            return done[s]
        if not (os.path.isabs(s) and len(s) < 4096 and Path(s).is_file()):
            return s
        local = Path(s)
        sha = _sha256(local)
        if not storage.exists(INPUTS_DIR, sha, local.name):
            storage.upload(local, INPUTS_DIR, sha, local.name)
        done[s] = storage.url(INPUTS_DIR, sha, local.name)
        return done[s]

    out = []
    for t in trials:
        data = t.model_dump(exclude_unset=True)
        staged = _walk(data, swap)
        out.append(type(t).model_validate(staged) if staged != data else t)
    return out


def is_staged(value: str) -> bool:
    return is_uri(value) and f"/{INPUTS_DIR}/" in value


def localize_inputs(data: Any, folder: Path) -> Any:
    """In a trial: copy each staged input (:func:`stage_inputs`) under ``folder``; return local paths."""
    import pyarrow.fs

    def fetch(s: str) -> str:
        if not is_staged(s):
            return s
        fs, path = _fs_from_uri(s)
        sha, name = path.rstrip("/").split("/")[-2:]
        dest = folder / sha / name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(
                path, str(dest), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
            )
        return str(dest)

    return _walk(data, fetch)


# ---------------------------------------------------------------------------------------------
# progress through Ray Client
# ---------------------------------------------------------------------------------------------
class ClientLog:
    """A picklable ``log`` for callbacks that run on the head under Ray Client: lines go to a Ray queue
    the client drains (:meth:`drain`) while ``Tuner.fit`` runs."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})

    def __call__(self, msg: str) -> None:
        self.queue.put(str(msg))

    def drain(self, log: Callable[[str], None]) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                log(self.queue.get_nowait())
            except Empty:
                return

    def shutdown(self) -> None:
        self.queue.shutdown()


def fit_streaming(fit: Callable[[], Any], sink: ClientLog, log: Callable[[str], None], every: float = 0.5) -> Any:
    """Run ``fit`` (a Ray Client ``Tuner.fit``) on a helper thread; print ``sink``'s lines meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sl2o-fit") as pool:
        future = pool.submit(fit)
        while not future.done():
            sink.drain(log)
            time.sleep(every)
        sink.drain(log)
        return future.result()



class ClientProgress(Progress):
    """:class:`harness.engine.progress.Progress` whose lines reach the Ray Client (its ``log`` survives pickling)."""

    def __init__(self, *args: Any, sink: ClientLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = self.sink = sink

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["log"] = self.sink  # to the client, not to a worker log on the head
        return state
