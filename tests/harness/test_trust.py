"""Tune state found in a workdir is unpickled only when this user's key signed its digest."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from harness import cluster
from harness.engine import stagekey, trust
from harness.engine.context import RunOptions
from harness.engine.stage import StagePlan, _verified_state
from harness.engine.trials import TRIALS_FILE


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "state.key"
    monkeypatch.setenv("SL2O_KEY_FILE", str(path))
    return path


def test_the_key_is_made_once_with_mode_0600(key_file: Path) -> None:
    key = trust.user_key()
    assert len(key) == trust.KEY_BYTES and key_file.stat().st_mode & 0o777 == 0o600
    assert trust.user_key() == key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_key_others_can_read_or_write_is_refused(key_file: Path, mode: int) -> None:
    trust.user_key()
    key_file.chmod(mode)
    with pytest.raises(trust.TrustError, match=f"chmod 600 {key_file}"):
        trust.user_key()


def test_a_symlinked_or_short_key_is_refused(key_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"k" * 64)
    target.chmod(0o600)
    key_file.parent.mkdir(parents=True)
    key_file.symlink_to(target)
    with pytest.raises(trust.TrustError, match="not a regular file"):
        trust.user_key()
    key_file.unlink()
    key_file.write_bytes(b"short")
    key_file.chmod(0o600)
    with pytest.raises(trust.TrustError, match="shorter than"):
        trust.user_key()


def test_an_unwritable_key_place_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SL2O_KEY_FILE", str(blocker / "sub" / "state.key"))  # no folder can be made there
    with pytest.raises(trust.TrustError, match="set SL2O_KEY_FILE to a writable path outside the workdir"):
        trust.user_key()


def test_signatures_depend_on_the_key(key_file: Path) -> None:
    sig = trust.sign("abc")
    assert sig.startswith(trust.SCHEME) and trust.matches("abc", sig)
    assert not trust.matches("abd", sig)
    assert not trust.matches("abc", trust.sign("abc", key=b"x" * 32))
    assert not trust.matches("abc", "abc")  # a plain digest is not a signature


class _Boom:
    """A pickle that runs code when loaded (it creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _forged_state(storage: cluster.Storage, parts: tuple[str, ...], marker: Path) -> Path:
    folder = Path(storage.url(*parts))
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps(_Boom(marker)))
    (folder / TRIALS_FILE).write_text("[]")
    return folder


def _plan() -> StagePlan:
    from types import SimpleNamespace

    return StagePlan(SimpleNamespace(name="ev"), None, [], "0" * 16, Path("."))  # type: ignore[arg-type]


def test_a_forged_digest_is_never_unpickled(key_file: Path, tmp_path: Path) -> None:
    """Whoever can write the workdir and the store can replace the state and recompute its plain digest, or
    invent a signature; neither makes the harness read it."""
    storage = cluster.Storage(str(tmp_path / "wd"))
    parts = ("tune", "s", "ev-" + "0" * 16)
    marker = tmp_path / "code-ran"
    folder = _forged_state(storage, parts, marker)
    logs: list[str] = []
    opts = RunOptions(log=logs.append)

    # a plain digest (what the old harness recorded, and what anyone can compute): set aside, not read
    plain = stagekey.digest_tree(folder)
    assert _verified_state(_plan(), storage, parts, plain, opts) is False
    assert not folder.exists() and "is not signed" in logs[-1] and not marker.exists()

    # a signature made with another key: refused before anything is read
    folder = _forged_state(storage, parts, marker)
    forged = trust.sign(stagekey.digest_tree(folder), key=b"attacker".ljust(32, b"!"))
    with pytest.raises(stagekey.StateIntegrityError, match="another user's key"):
        _verified_state(_plan(), storage, parts, forged, opts)
    assert not marker.exists()

    # this user's own signature is trusted
    assert _verified_state(_plan(), storage, parts, stagekey.sign_tree(folder), opts) is True
    assert not marker.exists()  # checking the signature never unpickles either
