"""What a stage kind's report hook may read of a finished stage, without knowing where it is stored.

The report layer serves a :class:`StageView` from MLflow; stage kinds draw their panels from it and stay
free of MLflow. A :class:`Panel` is one PNG of the report page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.stages.outputs import TAG


@dataclass
class Panel:
    """One PNG of the report page: its file, a heading and a one-line caption."""

    file: Path
    title: str
    caption: str


@dataclass(frozen=True)
class RunView:
    """One tracked run (a stage's own run or one of its trials): its id and its tags."""

    run_id: str
    tags: Mapping[str, str]

    def tag(self, name: str, default: str = "") -> str:
        """The ``sl2o.<name>`` tag."""
        return self.tags.get(f"{TAG}.{name}", default)


class StageView(Protocol):
    """A finished stage of a suite's latest run, as the report reads it."""

    name: str
    kind: str
    #: the stage's own run (stage-level artifacts), None when only trial runs exist
    run: RunView | None
    #: one finished run per trial, ordered by run name
    trials: Sequence[RunView]
    #: the stages before this one in the suite run, in order
    earlier: Sequence[StageView]

    def download(self, run_id: str, path: str) -> Path | None:
        """Artifact ``path`` of run ``run_id`` as a local file or folder (None when it has no such file)."""
        ...

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of a run's metric, in logged order."""
        ...


def slug(text: str) -> str:
    """``text`` as a safe file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
