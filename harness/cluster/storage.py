"""The workdir as Ray Tune storage: a local directory or any URI ``pyarrow.fs.FileSystem.from_uri`` opens.

:func:`check_storage` runs one tiny task pinned on every node that reads a file the driver wrote there and
writes one back, and names the node that cannot.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from harness.cluster.connection import ClusterError
from harness.cluster.resources import CHECK_TIMEOUT_S, NodeInfo, alive_nodes


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
            default = (
                Path(os.environ.get("SL2O_CACHE_DIR") or Path.home() / ".cache" / "symbolic-l2o") / digest
            )
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


def check_storage(
    storage: Storage, nodes: list[NodeInfo] | None = None, timeout: float = CHECK_TIMEOUT_S
) -> int:
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
