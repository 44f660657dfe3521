"""Fixtures shared by the harness tests: stand-ins for what the MLflow tracker reads of Ray Tune's trials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class FakeTrial:
    """What the tracker reads of a Tune trial."""

    trial_id: str
    config: dict[str, Any]
    checkpoint: Any = None
    error_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeCheckpoint:
    """What the tracker reads of a Tune checkpoint: its directory."""

    path: str


@pytest.fixture
def fake_trial() -> type[FakeTrial]:
    return FakeTrial


@pytest.fixture
def fake_checkpoint() -> type[FakeCheckpoint]:
    return FakeCheckpoint
