"""What the runner keeps out of a user's terminal: Tune's restore hint and Ray's token-auth note (not its
warning that authentication is disabled)."""

from __future__ import annotations

import logging

import pytest

from harness.engine.runner import quiet_tune_output


def test_ray_notes_the_harness_replaces_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    quiet_tune_output()
    quiet_tune_output()  # idempotent: one filter each
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    tune = logging.getLogger("ray.tune.tune")
    assert len(auth.filters) == 1 and len(tune.filters) == 1
    with caplog.at_level(logging.WARNING):
        auth.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled ...")
        tune.warning("Resume experiment with: Tuner.restore(path=...)")
        auth.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Token authentication is disabled for this Ray cluster. Anyone with network access ..."
    ]
