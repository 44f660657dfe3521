"""The user's state key: what lets a rerun trust Tune state it finds in a workdir it does not control.

Tune's state is a pickle, so restoring it runs code. Its digest is signed (HMAC-SHA256) with a per-user key
that lives outside the workdir and the tracking store (``$SL2O_KEY_FILE``, else
``$XDG_CONFIG_HOME/symbolic-l2o/state.key``, else ``~/.config/symbolic-l2o/state.key``), created on first use
with mode 0600. Whoever can write the workdir or the store, but not that file, cannot forge a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

#: the prefix of a signed digest (a tag without it was written by an older harness: never trusted)
SCHEME = "hmac-sha256:"
KEY_BYTES = 32


class TrustError(RuntimeError):
    """The state key cannot be created or read safely (a fix is named in the message)."""


def key_path() -> Path:
    """Where the user's state key lives (see the module docstring)."""
    if os.environ.get("SL2O_KEY_FILE"):
        return Path(os.environ["SL2O_KEY_FILE"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "symbolic-l2o" / "state.key"


def user_key(path: Path | None = None) -> bytes:
    """The key at ``path`` (default :func:`key_path`), created with mode 0600 when missing. A key that others
    can read or write, that is not a regular file, or that is not this user's is refused."""
    path = path or key_path()
    if not path.exists() and not path.is_symlink():
        _create(path)
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise TrustError(f"the state key {path} is not a regular file; remove it (a new one is created)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TrustError(f"the state key {path} belongs to another user; remove it or set SL2O_KEY_FILE")
    if st.st_mode & 0o077:
        raise TrustError(
            f"the state key {path} can be read or written by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`, or remove it to have a new one made"
        )
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise TrustError(
            f"the state key {path} is shorter than {KEY_BYTES} bytes; remove it (a new one is made)"
        )
    return key


def _create(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it just now
    except OSError as err:
        raise TrustError(
            f"cannot create the state key {path} ({err.strerror}); set SL2O_KEY_FILE to a writable path "
            "outside the workdir"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(KEY_BYTES))


def sign(digest: str, key: bytes | None = None) -> str:
    """``digest`` signed with the user's key: ``hmac-sha256:<hex>``."""
    mac = hmac.new(key if key is not None else user_key(), digest.encode(), hashlib.sha256)
    return SCHEME + mac.hexdigest()


def is_signed(value: str | None) -> bool:
    """Whether a recorded value is a signature of this scheme (else: written by an older harness)."""
    return bool(value) and str(value).startswith(SCHEME)


def matches(digest: str, signature: str, key: bytes | None = None) -> bool:
    """Whether ``signature`` is this user's signature of ``digest`` (constant-time compare)."""
    return is_signed(signature) and hmac.compare_digest(sign(digest, key), signature)
