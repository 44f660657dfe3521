"""Shared fixtures: one local Ray session for the whole test run, quiet logs, small thread counts."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# the state key that signs Tune state (harness.engine.trust): one per test run, never the user's own
if "SL2O_KEY_FILE" not in os.environ:
    import tempfile

    os.environ["SL2O_KEY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="sl2o-key-"), "state.key")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every end-to-end test (started once, shut down at the end)."""
    import ray

    from harness.engine.runner import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small models: thread hand-offs cost more than they save, and
    two test processes on a 2-core CI machine must not oversubscribe it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(),
                reason="needs CUDA (torch.cuda.is_available() is False); the cpu case is its twin",
            ),
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> str:
    """Each device a test runs on: ``cpu`` always, ``cuda`` where there is one (skipped with its reason)."""
    return request.param

