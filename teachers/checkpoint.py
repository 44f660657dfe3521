"""Teacher checkpoints: one ``torch.save`` file loadable with ``weights_only=True``.

Format (a plain dict): ``{"format": "sl2o-teacher/1", "teacher": <TEACHERS name>, "kwargs": {...},
"state_dict": {...}, "feature_spec": {...}, "meta": {...}}``. A checkpoint is untrusted input:
:func:`read_checkpoint` loads with ``weights_only=True`` and refuses files over
:data:`MAX_CHECKPOINT_BYTES`; :func:`teacher_from_dict` checks the constructor arguments (plain values,
sizes within the teacher's kwargs model, :mod:`teachers.params`) before building anything. Every failure is
a :class:`TeacherCheckpointError`.
"""

from __future__ import annotations

import math
import os
import reprlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.serialization import MAP_LOCATION

from harness.registry import TEACHERS
from teachers.base import Teacher, build_teacher

FORMAT = "sl2o-teacher/1"
MAX_CHECKPOINT_BYTES = 2**30
"""Largest teacher checkpoint read (bytes; for the zip format, the declared decompressed size)."""
MAX_KWARG_ITEMS = 64
"""Longest list a checkpoint's constructor argument may be (e.g. RP(extra)'s ``extra`` features)."""


class TeacherCheckpointError(ValueError):
    """The file is missing, unreadable or not a teacher checkpoint of a known format."""


def checkpoint_dict(teacher: Teacher, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint content of ``teacher`` (tensors moved to CPU)."""
    if not teacher.name:
        raise TeacherCheckpointError(
            f"{type(teacher).__name__} is not registered (use teachers.base.register_teacher)"
        )
    return {
        "format": FORMAT,
        "teacher": teacher.name,
        "kwargs": dict(teacher.kwargs),
        "state_dict": {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()},
        "feature_spec": teacher.feature_spec.to_dict(),
        "meta": dict(meta or {}),
    }


def save_teacher(
    teacher: Teacher, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``teacher`` to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_dict(teacher, meta), path)
    return path


def _declared_size(path: Path) -> int:
    """The bytes ``path`` decompresses to: the zip directory's sizes (torch's format), else its size."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return sum(i.file_size for i in zf.infolist())
    return path.stat().st_size


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` failed, in one line (never torch's advice to retry with weights_only=False)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        skip = ("Check the documentation", "Please file an issue")
        detail = next((ln for ln in lines[1:] if not ln.startswith(skip)), "")
        return "it holds more than tensors and plain values" + (f": {detail[:200]}" if detail else "")
    return lines[0][:300] if lines else type(exc).__name__


def read_checkpoint(path: str | os.PathLike[str], map_location: MAP_LOCATION = "cpu") -> dict[str, Any]:
    """Load and validate the checkpoint dict (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherCheckpointError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        size = _declared_size(path)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise TeacherCheckpointError(
            f"{str(path)!r} is not a teacher checkpoint (a broken zip: {exc})"
        ) from None
    if size > MAX_CHECKPOINT_BYTES:
        raise TeacherCheckpointError(
            f"{str(path)!r} is {size} bytes (decompressed), over the cap of {MAX_CHECKPOINT_BYTES} "
            "(teachers.checkpoint.MAX_CHECKPOINT_BYTES)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure to load is the same answer
        why = _load_failure(exc)
        raise TeacherCheckpointError(
            f"{str(path)!r} is not a teacher checkpoint (cannot load it with weights_only=True: {why})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TeacherCheckpointError(
            f"{str(path)!r} is not a teacher checkpoint: expected format {FORMAT!r}, found {short(found)}"
        )
    for key in ("teacher", "kwargs", "state_dict"):
        if key not in ckpt:
            raise TeacherCheckpointError(f"teacher checkpoint {str(path)!r} lacks the {key!r} field")
    return ckpt


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


def short(value: Any, n: int = 80) -> str:
    """A bounded rendering of an untrusted value for an error message: depth and length capped, so a
    pickled DAG of shared lists or a 5,000-digit integer costs nothing to show."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        return _REPR.repr(value)[:n]
    except Exception:  # noqa: BLE001 - whatever the value does, the message stays one line
        return f"<a {type(value).__name__}>"


def _plain(value: Any) -> bool:
    """A constructor argument a checkpoint may hold: None, bool, int, finite float, short str, or a short
    list of those."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= 200
    if isinstance(value, list | tuple):
        return len(value) <= MAX_KWARG_ITEMS and all(
            not isinstance(v, list | tuple) and _plain(v) for v in value
        )
    return False


def check_kwargs(
    kwargs: Any, source: str = "teacher checkpoint", teacher: str | None = None
) -> dict[str, Any]:
    """``kwargs`` if they are plain values and, for a registered ``teacher``, within its kwargs model's bounds
    (:mod:`teachers.params`: LSTM width and depth, input projection); TeacherCheckpointError otherwise."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TeacherCheckpointError(f"{source}: 'kwargs' must be a mapping of argument names to values")
    for k, v in kwargs.items():
        if not _plain(v):
            raise TeacherCheckpointError(f"{source}: kwargs[{k!r}] is not a plain value ({short(v)})")
    if teacher is not None and teacher in TEACHERS:
        try:
            TEACHERS.check_kwargs(teacher, kwargs, f"kwargs of teacher {teacher[:80]!r}")
        except ValueError as exc:
            raise TeacherCheckpointError(f"{source}: {exc}") from None
    return kwargs


def teacher_from_dict(ckpt: Mapping[str, Any], source: str = "teacher checkpoint") -> Teacher:
    """Rebuild a teacher from a checkpoint dict through the ``TEACHERS`` registry; its kwargs are checked
    first (:func:`check_kwargs`) and any failure is a TeacherCheckpointError naming ``source``."""
    name, state = ckpt["teacher"], ckpt["state_dict"]
    if not isinstance(name, str):
        raise TeacherCheckpointError(f"{source}: 'teacher' must be a registered teacher name")
    kwargs = check_kwargs(ckpt["kwargs"], source, name)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in state.items()
    ):
        raise TeacherCheckpointError(f"{source}: 'state_dict' must map parameter names to tensors")
    try:
        # first without memory (the meta device): the shapes the kwargs declare must be the weights' shapes,
        # so the teacher built next is no larger than the checkpoint (bounded by MAX_CHECKPOINT_BYTES)
        with torch.device("meta"):
            shell = build_teacher(name, kwargs)
        _check_shapes(shell.state_dict(), state, name, source)
        teacher = build_teacher(name, kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, TeacherCheckpointError):
            raise
        raise TeacherCheckpointError(f"{source}: cannot build teacher {name[:80]!r}: {exc}") from None
    try:
        teacher.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        first = " ".join(str(exc).split())[:400]
        raise TeacherCheckpointError(f"{source}: its weights do not fit teacher {name!r}: {first}") from None
    return teacher


def _check_shapes(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name: str, source: str
) -> None:
    """The checkpoint's tensors are exactly the teacher's: same names, same shapes."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = (f"missing {', '.join(missing[:5])}" if missing else "") + (
            f"{'; ' if missing else ''}unexpected {', '.join(k[:40] for k in extra[:5])}" if extra else ""
        )
        raise TeacherCheckpointError(f"{source}: its weights do not fit teacher {name!r}: {what}")
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise TeacherCheckpointError(
                f"{source}: its weights do not fit teacher {name!r}: {k} is {tuple(state[k].shape)} in the "
                f"file, {tuple(v.shape)} for its kwargs"
            )


def load_teacher(path: str | os.PathLike[str], map_location: MAP_LOCATION = "cpu") -> Teacher:
    """Load a teacher saved by :func:`save_teacher` (in eval mode)."""
    return teacher_from_dict(read_checkpoint(path, map_location), repr(str(path))).eval()
