"""Content-addressed stage keys, the code version, and integrity digests of Tune state (no Ray, no MLflow).

A suite stage is reused when a finished stage run with the same key exists (``docs/architecture.md``), so
:func:`stage_key` covers everything that changes its results: the spec minus its scheduling fields, the input
stages' keys, the planned trials, the contents of the files they name, and :func:`code_version`.
:func:`digest_tree` and :func:`verify_tree` guard Ray Tune's experiment folder, which Tune unpickles on
restore; a digest is only valid once Tune stopped writing it (after ``Tuner.fit`` returned).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness import __version__
from harness.engine import trust

#: spec fields that decide how trials are scheduled, never what they compute
SCHEDULING_FIELDS = frozenset({"max_concurrent", "resources", "max_failures"})

#: the most bytes of one file a stage key hashes
MAX_FILE_BYTES = 1 << 30

#: paths (relative to the checkout's root) whose uncommitted changes change the code version
CODE_PATHS = ("harness", "teachers", "optimizees", "search_spaces", "pyproject.toml")

#: seconds one git command may take
GIT_TIMEOUT_S = 10.0

_CHUNK = 1 << 20
_MAX_PATH_CHARS = 4096


class StageKeyError(ValueError):
    """A stage whose key cannot be computed (e.g. it reads a file over :data:`MAX_FILE_BYTES`)."""


class StateIntegrityError(ValueError):
    """Saved Tune state that does not match the digest the harness recorded for it."""


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def file_digest(path: str | Path, limit: int | None = None) -> str:
    """sha256 (hex) of a file's contents, read in chunks; a file over ``limit`` bytes raises StageKeyError."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise StageKeyError(_too_large(path, size, limit))
        while chunk := f.read(_CHUNK):
            n += len(chunk)
            if limit is not None and n > limit:
                raise StageKeyError(_too_large(path, n, limit))
            h.update(chunk)
    return h.hexdigest()


def _too_large(path: str | Path, size: int, limit: int) -> str:
    return (
        f"{path} is over {limit} bytes ({size} or more); a stage key hashes every file a stage reads and "
        f"refuses files over {limit} bytes (harness.engine.stagekey.MAX_FILE_BYTES)"
    )


def _strings(value: Any) -> Iterator[str]:
    """Every string value at any depth of a JSON-like value (dict keys are not values)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _is_file(s: str) -> bool:
    if not s or len(s) > _MAX_PATH_CHARS or "\0" in s:
        return False
    try:
        return Path(s).is_file()
    except (OSError, ValueError):
        return False


def read_files(*dumps: Any) -> dict[str, str]:
    """Path string -> sha256 of its contents, for every string value in ``dumps`` that names a regular file."""
    out: dict[str, str] = {}
    for dump in dumps:
        for s in _strings(dump):
            if s not in out and _is_file(s):
                out[s] = file_digest(s, MAX_FILE_BYTES)
    return out


# ---------------------------------------------------------------------------------------------
# the key
# ---------------------------------------------------------------------------------------------
def stage_key(spec: BaseModel, inputs_keys: Mapping[str, str], trials: Sequence[BaseModel]) -> str:
    """The stage's content address (16 hex chars): a sha256 over

    * the spec's JSON dump without :data:`SCHEDULING_FIELDS`, and the input stages' keys (sorted by name);
    * the planned trials' JSON dumps, in plan order (grids of ``search_spaces/*.yaml`` are expanded there);
    * the sha256 of every string, at any depth of those dumps, that names an existing regular file (contents
      only, never mtimes; the path string stays in the dump, so another workdir gives another key); missing
      paths and directories are not hashed, a file over :data:`MAX_FILE_BYTES` raises :class:`StageKeyError`;
    * :func:`code_version` (third-party plug-ins and installed dependencies are not covered).

    Args:
        spec: the stage's spec model (a ``harness.config.suite.StageBase`` subclass).
        inputs_keys: input stage name -> that stage's key.
        trials: the planned trial models (``StageKind.plan``), in plan order.
    """
    spec_dump = spec.model_dump(mode="json", exclude=set(SCHEDULING_FIELDS))
    trial_dumps = [t.model_dump(mode="json") for t in trials]
    payload = {
        "spec": spec_dump,
        "inputs": sorted(inputs_keys.items()),
        "trials": trial_dumps,
        "files": sorted(read_files(spec_dump, trial_dumps).items()),
        "code": code_version(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# code version
# ---------------------------------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> bytes | None:
    """stdout of ``git args`` in ``cwd``, or None when git is missing, fails or times out."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # read-only: never take index.lock
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_version(package_dir: Path) -> dict[str, Any]:
    """``commit``, ``dirty`` and ``diff`` of the git checkout holding ``package_dir`` (all None outside one).

    ``dirty`` is whether :data:`CODE_PATHS` have uncommitted changes (``git status --porcelain``, untracked
    files included); ``diff`` is then a sha256 over ``git diff HEAD`` of those paths and the untracked
    files' names and contents, so each edit of the checkout gives another code version.
    """
    none = {"commit": None, "dirty": None, "diff": None}
    # the package must be tracked here: a venv inside some other repository is not "this checkout"
    if not _git(package_dir, "ls-files", "--", "__init__.py"):
        return none
    head = _git(package_dir, "rev-parse", "HEAD")
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if not head or not top:
        return none
    root = Path(top.decode().strip())
    commit = head.decode().strip()
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
    if status is None:
        return {"commit": commit, "dirty": None, "diff": None}
    if not status.strip():
        return {"commit": commit, "dirty": False, "diff": None}
    diff = _git(
        root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color", "--", *CODE_PATHS
    )
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS)
    if diff is None or untracked is None:
        return {"commit": commit, "dirty": True, "diff": None}
    h = hashlib.sha256(diff)
    for name in sorted(n for n in untracked.decode(errors="surrogateescape").split("\0") if n):
        p = root / name
        h.update(b"\0untracked\0" + name.encode(errors="surrogateescape") + b"\0")
        h.update(file_digest(p, MAX_FILE_BYTES).encode() if p.is_file() else b"-")
    return {"commit": commit, "dirty": True, "diff": h.hexdigest()}


@lru_cache(maxsize=1)
def _code_version() -> tuple[tuple[str, Any], ...]:
    info = {"version": __version__, **git_version(Path(__file__).resolve().parent)}
    return tuple(info.items())


def code_version() -> dict[str, Any]:
    """The code that computes results (computed once per process; log it as tags).

    Keys: ``version`` (``harness.__version__``), ``commit`` (``git rev-parse HEAD`` or None),
    ``dirty`` (bool, None when unknown), ``diff`` (sha256 of the uncommitted changes or None);
    see :func:`git_version`.
    """
    return dict(_code_version())


# ---------------------------------------------------------------------------------------------
# Tune state integrity
# ---------------------------------------------------------------------------------------------
def digest_tree(path: Path) -> str:
    """sha256 over the relative paths and contents of every file under ``path`` (sorted, streaming).

    Symbolic links are recorded by their target (never followed) and other special files by their
    type, so planting either changes the digest; empty directories do not count.
    """
    root = Path(path)
    if not root.is_dir():
        raise StateIntegrityError(f"{root} is not a directory")
    entries: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        # symlinked directories are listed in dirnames but not walked into: record them as links
        names = filenames + [d for d in dirnames if (here / d).is_symlink()]
        for name in names:
            p = here / name
            rel = p.relative_to(root).as_posix()
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                entries.append((rel, "link:" + os.readlink(p)))
            elif stat.S_ISREG(mode):
                entries.append((rel, "file:" + file_digest(p)))
            else:
                entries.append((rel, f"special:{stat.S_IFMT(mode)}"))
    h = hashlib.sha256()
    for rel, what in sorted(entries):
        h.update(rel.encode(errors="surrogateescape") + b"\0" + what.encode(errors="surrogateescape") + b"\n")
    return h.hexdigest()


def sign_tree(path: Path) -> str:
    """:func:`digest_tree` of ``path`` signed with the user's state key (:mod:`harness.engine.trust`)."""
    return trust.sign(digest_tree(path))


def verify_tree(path: Path, expected: str) -> None:
    """Raise :class:`StateIntegrityError` unless ``path`` is what ``expected`` describes: its signed digest
    (:func:`sign_tree`, checked with this user's key), or a plain :func:`digest_tree`."""
    actual = digest_tree(path)
    ok = trust.matches(actual, expected) if trust.is_signed(expected) else actual == expected
    if not ok:
        m = re.fullmatch(r"(.+)-[0-9a-f]{16}", Path(path).name)  # the runner's "<stage>-<key>" folders
        stage = m.group(1) if m else "STAGE"
        raise StateIntegrityError(
            f"the Tune state in {path} does not match what this harness wrote (digest {actual[:16]}); it "
            f"may have been modified, or signed with another user's key; delete the folder or rerun with "
            f"--fresh {stage}"
        )
