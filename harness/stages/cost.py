"""What an optimizer costs, measured inside the trial that uses it: state bytes per parameter, and its step
time against ``torch.optim.Adam(foreach=True)`` stepping the same parameters with the same gradients.

Both are read at the end of a training run, so every leaderboard row carries its own cost on the model
and hardware it ran on (a ratio taken in one process, as the perf scripts do).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

#: Adam steps timed (after 2 warm-up steps) for the reference
ADAM_REPEATS = 10


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def state_bytes_per_param(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> float:
    """Bytes of tensors the optimizer keeps in its state, per trainable parameter (scalar): its own
    ``state_bytes()`` where it has one (a teacher keeps its feature and LSTM state outside ``opt.state``),
    else the tensors in ``opt.state``."""
    n = sum(p.numel() for p in params)
    own = getattr(opt, "state_bytes", None)
    total = int(cast(Callable[[], int], own)()) if callable(own) else _tensor_bytes(dict(opt.state))
    return total / n if n else 0.0


def step_seconds_vs_adam(
    opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], repeats: int = ADAM_REPEATS
) -> tuple[float, float]:
    """Median seconds of one ``opt.step()`` and of one ``Adam(foreach=True)`` step, timed alternately.

    Call it after training (it steps the model further): the optimizer steps ``params`` with their last
    gradients, Adam steps copies of them; alternating the two keeps both under the same machine load.
    """
    copies = []
    for p in params:
        if p.grad is None:
            continue
        c = p.detach().clone().requires_grad_(True)
        c.grad = p.grad.detach().clone()
        copies.append(c)
    if not copies:
        return float("nan"), float("nan")
    adam = torch.optim.Adam(copies, lr=1e-3, foreach=True)
    mine: list[float] = []
    ref: list[float] = []
    cuda = any(c.is_cuda for c in copies)

    def now() -> float:
        if cuda:  # kernels run asynchronously: time the work, not the launches
            torch.cuda.synchronize()
        return time.perf_counter()

    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = now()
            opt.step()
            t1 = now()
            adam.step()
            t2 = now()
            if i >= 2:  # warm-up: state allocation, first calls
                mine.append(t1 - t0)
                ref.append(t2 - t1)
    return statistics.median(mine), statistics.median(ref)
