"""Stage keys cover what changes results (and nothing else); Tune state digests catch tampering."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import harness.engine.stagekey as sk
import search_spaces
from harness import __version__
from harness.config.suite import load_suite_dict
from harness.registry import STAGES
from teachers.checkpoint import save_teacher
from teachers.rules import SGDRule

GRID = """grids:
  g:
    - family: sgd
      lr: [0.1, 0.01]
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with a grid file, an equation file and a teacher checkpoint (relative paths)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(GRID)
    (tmp_path / "eq.json").write_text('{"expression": "-0.1*g_0"}')
    save_teacher(SGDRule(lr=0.1), tmp_path / "teacher.pt")  # validate checks the files' kinds
    search_spaces._read_file.cache_clear()
    yield tmp_path
    search_spaces._read_file.cache_clear()


def _stage(**extra: Any) -> Any:
    data = {
        "name": "t",
        "stages": [
            {
                "kind": "evaluate",
                "name": "ev",
                "optimizees": [{"name": "quadratic_cos", "steps": 5}],
                "optimizers": [
                    {"grid": "g", "file": "grid.yaml"},
                    {"family": "symbolic", "equation": "eq.json"},
                    {"family": "teacher", "checkpoint": "teacher.pt"},
                ],
                **extra,
            }
        ],
    }
    suite = load_suite_dict(data)
    return suite, suite.stages[0]


def _key(inputs: dict[str, str] | None = None, **extra: Any) -> str:
    suite, spec = _stage(**extra)
    trials = STAGES.get("evaluate").plan(suite, spec, {})
    return sk.stage_key(spec, inputs or {}, trials)


def test_key_is_stable_and_short(files: Path) -> None:
    k = _key()
    assert k == _key()
    assert len(k) == 16 and int(k, 16) >= 0


def test_grid_file_contents_change_the_key(files: Path) -> None:
    before = _key()
    (files / "grid.yaml").write_text(GRID.replace("0.01", "0.001"))
    search_spaces._read_file.cache_clear()
    assert _key() != before


def test_grid_file_digest_alone_changes_the_key(files: Path) -> None:
    suite, spec = _stage()
    trials = STAGES.get("evaluate").plan(suite, spec, {})
    before = sk.stage_key(spec, {}, trials)
    (files / "grid.yaml").write_text(GRID + "  other:\n    - family: adam\n      lr: 0.1\n")
    assert sk.stage_key(spec, {}, trials) != before  # same resolved trials, edited file


@pytest.mark.parametrize("name", ["eq.json", "teacher.pt"])
def test_read_file_contents_change_the_key(files: Path, name: str) -> None:
    before = _key()
    (files / name).write_bytes((files / name).read_bytes() + b" ")
    assert _key() != before


def test_mtime_does_not_change_the_key(files: Path) -> None:
    before = _key()
    for name in ("grid.yaml", "eq.json", "teacher.pt"):
        os.utime(files / name, (1_000_000, 1_000_000))
    assert _key() == before


def test_input_keys_change_the_key_and_their_order_does_not(files: Path) -> None:
    base = _key({"a": "1111", "b": "2222"})
    assert _key({"b": "2222", "a": "1111"}) == base
    assert _key({"a": "1111", "b": "2223"}) != base
    assert _key({"a": "1111"}) != base


def test_trial_list_changes_the_key(files: Path) -> None:
    suite, spec = _stage()
    trials = STAGES.get("evaluate").plan(suite, spec, {})
    base = sk.stage_key(spec, {}, trials)
    assert sk.stage_key(spec, {}, trials[:-1]) != base
    assert sk.stage_key(spec, {}, list(reversed(trials))) != base
    assert _key(seeds=[0, 1]) != base


def test_scheduling_fields_do_not_change_the_key(files: Path) -> None:
    base = _key()
    assert _key(max_concurrent=3) == base
    assert _key(max_failures=5) == base
    assert _key(resources={"cpus_per_trial": 4, "gpus_per_trial": 1}) == base


def test_code_version_is_part_of_the_key(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _key()
    monkeypatch.setattr(sk, "code_version", lambda: {"version": "0.0.0", "commit": None})
    assert _key() != base


def test_files_over_the_limit_are_refused(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "MAX_FILE_BYTES", 4)
    with pytest.raises(sk.StageKeyError, match="MAX_FILE_BYTES"):
        _key()


def test_read_files_finds_nested_existing_files_only(files: Path) -> None:
    dump = {"a": ["eq.json", {"b": "missing.json"}], "dataset": "digits", "n": 3, ".": "."}
    found = sk.read_files(dump)
    assert list(found) == ["eq.json"]
    assert found["eq.json"] == sk.file_digest(files / "eq.json")


# ---------------------------------------------------------------------------------------------
# code version
# ---------------------------------------------------------------------------------------------
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_code_version_of_this_checkout() -> None:
    root = Path(sk.__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    info = sk.code_version()
    assert info["version"] == __version__
    assert info["commit"] == head.stdout.strip()
    assert isinstance(info["dirty"], bool)
    assert (info["diff"] is not None) == info["dirty"]
    assert sk.code_version() == info  # cached per process


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True
    )


@needs_git
def test_git_version_tracks_uncommitted_source_changes(tmp_path: Path) -> None:
    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "harness/__init__.py")
    _git(tmp_path, "commit", "-q", "-m", "init")
    clean = sk.git_version(pkg)
    assert clean["commit"] and len(clean["commit"]) == 40
    assert clean["dirty"] is False and clean["diff"] is None

    (tmp_path / "runs").mkdir()  # outputs and notes outside the source paths do not count
    (tmp_path / "runs" / "state.json").write_text("{}")
    (tmp_path / "notes.md").write_text("hi")
    assert sk.git_version(pkg) == clean

    (pkg / "__init__.py").write_text("x = 2\n")
    one = sk.git_version(pkg)
    assert one["commit"] == clean["commit"] and one["dirty"] is True and one["diff"]
    (pkg / "__init__.py").write_text("x = 3\n")
    two = sk.git_version(pkg)
    assert two["dirty"] is True and two["diff"] != one["diff"]

    (pkg / "plugin.py").write_text("y = 1\n")  # an untracked module is code too
    three = sk.git_version(pkg)
    assert three["diff"] not in (one["diff"], two["diff"])
    (pkg / "plugin.py").write_text("y = 2\n")
    assert sk.git_version(pkg)["diff"] != three["diff"]


def test_git_version_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "__init__.py").write_text("")
    none = {"commit": None, "dirty": None, "diff": None}
    assert sk.git_version(tmp_path) == none
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all
    assert sk.git_version(Path(sk.__file__).resolve().parent) == none


# ---------------------------------------------------------------------------------------------
# Tune state digests
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "ev-0123456789abcdef"
    (d / "trial_1" / "checkpoint_000000").mkdir(parents=True)
    (d / "tuner.pkl").write_bytes(b"\x80pickle")
    (d / "experiment_state-2025.json").write_text("{}")
    (d / "basic-variant-state-2025.json").write_text("{}")
    (d / "trial_1" / "checkpoint_000000" / "trainer.pt").write_bytes(b"w")
    return d


def test_digest_tree_is_stable_and_ignores_mtime(state: Path) -> None:
    digest = sk.digest_tree(state)
    os.utime(state / "tuner.pkl", (1_000_000, 1_000_000))
    (state / "empty").mkdir()
    assert sk.digest_tree(state) == digest
    sk.verify_tree(state, digest)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "callback-states-x.pkl").write_bytes(b"evil"),  # planted
        lambda d: (d / "trial_1" / "params.pkl").write_bytes(b"evil"),  # planted in a trial folder
        lambda d: (d / "tuner.pkl").write_bytes(b"\x80pickle!"),  # changed
        lambda d: (d / "experiment_state-2025.json").unlink(),  # removed
        lambda d: (d / "tuner.pkl").rename(d / "tuner2.pkl"),  # renamed
        lambda d: (d / "link.pkl").symlink_to("/etc/hostname"),  # planted link
    ],
    ids=["planted", "planted-nested", "changed", "removed", "renamed", "symlink"],
)
def test_verify_tree_detects_tampering(state: Path, tamper: Any) -> None:
    digest = sk.digest_tree(state)
    tamper(state)
    with pytest.raises(sk.StateIntegrityError, match=r"--fresh ev$") as err:
        sk.verify_tree(state, digest)
    assert str(state) in str(err.value) and "may have been modified" in str(err.value)


def test_verify_tree_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(sk.StateIntegrityError, match="not a directory"):
        sk.verify_tree(tmp_path / "gone", "0" * 64)
