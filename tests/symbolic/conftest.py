"""Fixtures shared by the symbolic optimizer's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch


def _same_state(
    o_a: torch.optim.Optimizer,
    o_b: torch.optim.Optimizer,
    params_a: Iterable[torch.Tensor],
    params_b: Iterable[torch.Tensor],
    steps: int,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Two optimizers stepped alike hold, parameter by parameter, the same state: keys, step count, values."""
    for i, (p, q) in enumerate(zip(params_a, params_b, strict=True)):
        s, t = o_a.state[p], o_b.state[q]
        assert set(s) == set(t) and s["step"] == t["step"] == steps
        for key in s:
            if key != "step":
                torch.testing.assert_close(s[key], t[key], rtol=rtol, atol=atol, msg=f"param {i} {key}")


@pytest.fixture
def assert_same_state() -> Callable[..., Any]:
    return _same_state
