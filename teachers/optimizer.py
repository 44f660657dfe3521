"""Run a teacher as an ordinary ``torch.optim.Optimizer``.

All parameters of all param groups are viewed as one flat vector of n coordinates (the teacher is
coordinate-wise, so the order only has to be stable); one :class:`~harness.features.FeatureState` and
one teacher state cover them. Each group's ``lr`` multiplies the teacher's update (default 1.0), so a
cosine ``LambdaLR`` scheduler decays the learned step like any other optimizer's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from harness.features import FeatureState
from teachers.base import Teacher


class TeacherOptimizer(torch.optim.Optimizer):
    """``x <- x + lr * teacher(features(grad))`` over all parameters at once.

    Args:
        params: parameters or param groups (as for any torch optimizer).
        teacher: the update rule (run under ``no_grad``, never trained here).
        lr: multiplier of the teacher's update (1.0 = the teacher as meta-trained).

    Parameters whose ``.grad`` is None contribute a zero gradient (their feature state still ticks).
    The teacher runs in float32 on the parameters' device.
    """

    def __init__(self, params: ParamsT, teacher: Teacher, lr: float = 1.0) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, {"lr": float(lr)})
        self.teacher = teacher
        self._features: FeatureState | None = None
        self._tstate: dict[str, Tensor] | None = None
        self._pending: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(
        cls, params: ParamsT, checkpoint_path: str | os.PathLike[str], **kwargs: Any
    ) -> TeacherOptimizer:
        """Build from a teacher checkpoint (``teachers.checkpoint`` format); kwargs go to ``__init__``."""
        from teachers.checkpoint import load_teacher

        return cls(params, load_teacher(checkpoint_path), **kwargs)

    # -- internals ------------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _ensure_state(self, n: int, device: torch.device) -> None:
        if self._features is not None and self._features.n == n:
            return
        self.teacher.to(device)
        self._features = self.teacher.new_feature_state(n, device)
        self._tstate = self.teacher.init_state(n, device)
        if self._pending is not None:
            self._features.load_state_dict(self._pending["features"])
            self._tstate = {k: v.to(device) for k, v in self._pending["teacher_state"].items()}
            self._pending = None

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        if not params:
            return loss
        device = params[0].device
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device, torch.float32)
                for p in params
            ]
        )
        self._ensure_state(flat.numel(), device)
        if self._features is None or self._tstate is None:
            raise RuntimeError("TeacherOptimizer: feature/teacher state missing after _ensure_state")
        feats = self._features.update(flat)
        update, self._tstate = self.teacher(feats, self._tstate)
        offset = 0
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                k = p.numel()
                p.add_(update[offset : offset + k].view_as(p).to(p.dtype), alpha=lr)
                offset += k
        return loss

    # -- state ------------------------------------------------------------------------------------------
    def state_bytes(self) -> int:
        """Bytes of the per-coordinate state this optimizer keeps: the feature accumulators and lags and the
        teacher's recurrent state (kept outside ``self.state``; the teacher's weights are not per-parameter)."""
        if self._features is None or self._tstate is None:
            return 0
        tensors = [*_tensors(self._features.state_dict()), *self._tstate.values()]
        return sum(v.numel() * v.element_size() for v in tensors)

    def state_dict(self) -> dict[str, Any]:
        """Param groups (as torch does) plus ``teacher_runtime``: feature state and teacher state."""
        sd = super().state_dict()
        if self._features is not None and self._tstate is not None:
            sd["teacher_runtime"] = {
                "features": self._features.state_dict(),
                "teacher_state": {k: v.detach().clone() for k, v in self._tstate.items()},
            }
        elif self._pending is not None:
            sd["teacher_runtime"] = self._pending
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        runtime = state_dict.pop("teacher_runtime", None)
        super().load_state_dict(state_dict)
        self._features, self._tstate, self._pending = None, None, runtime
        if runtime is not None:
            params = self._params()
            if params:
                self._ensure_state(sum(p.numel() for p in params), params[0].device)


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []
