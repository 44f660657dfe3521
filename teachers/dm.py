"""DM (Andrychowicz et al., 2016): a coordinate-wise 2-layer LSTM on the gradient."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from harness.features import FeatureSpec, log_sign_preprocess
from teachers.base import LSTMStack, State, Teacher, register_teacher


@register_teacher("dm")
class DM(Teacher):
    """``update = out_scale * Linear(LSTM(preprocess(g)))``; the network learns the sign of the step.

    Args:
        hidden: LSTM hidden size (20).
        layers: stacked LSTM layers (2).
        preprocess: feed ``(log|g|/p, sign g)`` (Andrychowicz et al.'s log/sign preprocessing) instead of g.
        preprocess_p: the ``p`` of that preprocessing (10).
        out_scale: output multiplier (0.01).
    """

    def __init__(
        self,
        hidden: int = 20,
        layers: int = 2,
        preprocess: bool = True,
        preprocess_p: float = 10.0,
        out_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.kwargs = {
            "hidden": int(hidden),
            "layers": int(layers),
            "preprocess": bool(preprocess),
            "preprocess_p": float(preprocess_p),
            "out_scale": float(out_scale),
        }
        self.feature_spec = FeatureSpec(("g",))
        self.preprocess = bool(preprocess)
        self.preprocess_p = float(preprocess_p)
        self.out_scale = float(out_scale)
        self.lstm = LSTMStack(2 if self.preprocess else 1, int(hidden), int(layers))
        self.out = nn.Linear(int(hidden), 1)
        nn.init.zeros_(self.out.bias)

    def init_state(self, n_coords: int, device: torch.device | str | None = None) -> State:
        return self.lstm.init_state(n_coords, device)

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        g = features[:, 0]
        x = log_sign_preprocess(g, self.preprocess_p) if self.preprocess else g.unsqueeze(-1)
        h, new = self.lstm(x, state)
        return self.out_scale * self.out(h).squeeze(-1), new
