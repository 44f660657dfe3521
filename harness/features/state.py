"""The stateful feature API: :class:`FeatureState`, what optimizers and collectors hold per flat vector.

Gradients are treated as data (detached, as in the L2O literature), accumulators update in place through
:meth:`FeatureSpec.update_`, and the lagged features go into a :class:`History`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from harness.features.history import History
from harness.features.spec import FeatureSpec

__all__ = ["FeatureState"]


class FeatureState:
    """Stateful features of ``n`` coordinates (one flat vector; the optimizer flattens its params).

    ``update(grad)`` returns the current features ``[n, F]`` (in ``spec.names`` order) and, when
    ``history`` (default: ``spec.lags > 1``), pushes them into :attr:`history`; ``lagged()`` gives
    ``[n, F, T]``. Accumulators update in place; only those the features need are allocated.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        n: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        history: bool | None = None,
    ) -> None:
        self.spec = spec
        self.n = int(n)
        self.step = 0
        self._acc_defs = spec.accumulators()
        self.acc = {k: torch.zeros(self.n, device=device, dtype=dtype) for k in self._acc_defs}
        keep = spec.lags > 1 if history is None else history
        self.history = History(self.n, spec.num_features, spec.lags, device, dtype) if keep else None
        self.dtype = dtype

    @torch.no_grad()
    def update(self, grad: Tensor) -> Tensor:
        """Consume one gradient (any shape with n elements; detached) and return features ``[n, F]``."""
        g = grad.detach().reshape(-1).to(self.dtype)
        if g.numel() != self.n:
            raise ValueError(f"expected a gradient with {self.n} elements, got {g.numel()}")
        self.step += 1
        feats = self.spec.update_(self.acc, g, float(self.step))
        if self.history is not None:
            self.history.push(feats)
        return feats

    def lagged(self) -> Tensor:
        """``[n, F, T]`` history, lag 0 = newest, zeros before filled."""
        if self.history is None:
            raise ValueError("this FeatureState keeps no history (spec.lags == 1 and history=False)")
        return self.history.get()

    def nbytes(self) -> int:
        """Bytes of state held (accumulators + history)."""
        total = sum(t.numel() * t.element_size() for t in self.acc.values())
        if self.history is not None:
            total += self.history.buffer.numel() * self.history.buffer.element_size()
        return total

    def state_dict(self) -> dict[str, Any]:
        sd: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "step": self.step,
            "acc": {k: v.clone() for k, v in self.acc.items()},
        }
        if self.history is not None:
            sd["history"] = self.history.state_dict()
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if FeatureSpec.from_dict(sd["spec"]) != self.spec:
            raise ValueError(f"feature state was saved for {sd['spec']}, not {self.spec.to_dict()}")
        self.step = int(sd["step"])
        for k, v in sd["acc"].items():
            self.acc[k] = v.to(self.acc[k].device, self.dtype).clone()
        if self.history is not None and "history" in sd:
            self.history.load_state_dict(sd["history"])

    def to(self, device: torch.device | str) -> FeatureState:
        self.acc = {k: v.to(device) for k, v in self.acc.items()}
        if self.history is not None:
            self.history.buffer = self.history.buffer.to(device)
        return self
