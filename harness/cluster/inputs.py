"""Files that trials read (teacher checkpoints, datasets, equations) with a URI workdir: the driver copies them
into ``<workdir>/sl2o-inputs/<sha256>/`` (:func:`stage_inputs`); a trial copies them to its node before the stage
runs (:func:`localize_inputs`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cluster.storage import Storage, _fs_from_uri, is_uri

#: the folder of staged trial inputs in the workdir (trainables recognise staged URIs by it)
INPUTS_DIR = "sl2o-inputs"


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
