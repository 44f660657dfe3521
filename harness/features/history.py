"""The lag history of features: a ring buffer of the last ``T`` feature vectors of ``n`` coordinates.

Read back as ``[n, F, T]`` with lag 0 = newest and zeros for lags not seen yet; the flat row order of
``hist.reshape(n, F * T)`` is feature-major, lag-minor, as
:meth:`harness.features.spec.FeatureSpec.variable_names` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["History"]


class History:
    """Ring buffer of the last ``lags`` feature vectors of ``n`` coordinates.

    ``push([n, F])`` writes in place (O(n*F)); ``get()`` returns ``[n, F, T]`` with lag 0 = newest and
    zeros for lags not yet seen; ``valid`` counts real lags, ``mask()`` marks them.
    """

    def __init__(
        self,
        n: int,
        num_features: int,
        lags: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if lags < 1:
            raise ValueError(f"lags must be >= 1, got {lags}")
        self.lags = int(lags)
        self.buffer = torch.zeros(n, num_features, self.lags, device=device, dtype=dtype)
        self.pos = -1  # slot of the newest entry
        self.count = 0  # entries pushed so far

    @property
    def valid(self) -> int:
        """Number of lags holding real values (``min(count, lags)``)."""
        return min(self.count, self.lags)

    def push(self, feats: Tensor) -> None:
        self.pos = (self.pos + 1) % self.lags
        self.buffer[:, :, self.pos] = feats
        self.count += 1

    def get(self) -> Tensor:
        """``[n, F, T]``, lag 0 = newest, zeros for lags not seen yet (a copy)."""
        if self.count == 0:
            return torch.zeros_like(self.buffer)
        idx = (self.pos - torch.arange(self.lags, device=self.buffer.device)) % self.lags
        out = self.buffer.index_select(2, idx)
        if self.count < self.lags:
            out[:, :, self.count :] = 0.0
        return out

    def mask(self) -> Tensor:
        """Bool ``[T]``: which lags hold real values."""
        return torch.arange(self.lags, device=self.buffer.device) < self.count

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.clone(), "pos": self.pos, "count": self.count}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.buffer = sd["buffer"].to(self.buffer.device, self.buffer.dtype).clone()
        self.pos = int(sd["pos"])
        self.count = int(sd["count"])
