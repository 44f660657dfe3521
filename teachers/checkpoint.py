"""Teacher checkpoints: one ``torch.save`` file loadable with ``weights_only=True``.

Format (a plain dict)::

    {"format": "sl2o-teacher/1",
     "teacher": "<TEACHERS registry name>",
     "kwargs": {...},                  # constructor arguments (plain Python values)
     "state_dict": {...},              # tensors
     "feature_spec": {...},            # FeatureSpec.to_dict() of the teacher's inputs, informative
     "meta": {...}}                    # free-form plain values (optimizee, seed, val loss, ...)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.serialization import MAP_LOCATION

from teachers.base import Teacher, build_teacher

FORMAT = "sl2o-teacher/1"


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


def read_checkpoint(path: str | os.PathLike[str], map_location: MAP_LOCATION = "cpu") -> dict[str, Any]:
    """Load and validate the checkpoint dict (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherCheckpointError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise TeacherCheckpointError(
            f"{str(path)!r} is not a teacher checkpoint (cannot load it with weights_only=True: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TeacherCheckpointError(
            f"{str(path)!r} is not a teacher checkpoint: expected format {FORMAT!r}, found {found!r}"
        )
    for key in ("teacher", "kwargs", "state_dict"):
        if key not in ckpt:
            raise TeacherCheckpointError(f"teacher checkpoint {str(path)!r} lacks the {key!r} field")
    return ckpt


def teacher_from_dict(ckpt: Mapping[str, Any]) -> Teacher:
    """Rebuild a teacher from a checkpoint dict through the ``TEACHERS`` registry."""
    teacher = build_teacher(ckpt["teacher"], ckpt["kwargs"])
    teacher.load_state_dict(ckpt["state_dict"])
    return teacher


def load_teacher(path: str | os.PathLike[str], map_location: MAP_LOCATION = "cpu") -> Teacher:
    """Load a teacher saved by :func:`save_teacher` (in eval mode)."""
    return teacher_from_dict(read_checkpoint(path, map_location)).eval()
