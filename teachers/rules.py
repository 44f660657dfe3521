"""Hand-written update rules with the teacher interface (no learnable parameters).

They serve as distillation sanity checks (SR should recover ``-lr * g``, momentum, Adam) and as the
imitation target of IL. Each matches its ``torch.optim`` counterpart step for step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from harness.features import ADAM_BETAS, ADAM_EPS, ADAM_LR, FeatureSpec
from teachers.base import State, Teacher, register_teacher


@register_teacher("sgd")
class SGDRule(Teacher):
    """``update = -lr * g`` (``torch.optim.SGD`` without momentum)."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.kwargs = {"lr": float(lr)}
        self.lr = float(lr)
        self.feature_spec = FeatureSpec(("g",))

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        return -self.lr * features[:, 0], dict(state)


@register_teacher("momentum")
class MomentumRule(Teacher):
    """Heavy ball as in ``torch.optim.SGD(momentum=beta)``: ``buf = beta*buf + g`` (``buf_1 = g``),
    ``update = -lr * buf``. Note ``buf = m_beta / (1 - beta)`` without bias correction, unlike ``mXY``."""

    def __init__(self, lr: float = 0.01, beta: float = 0.9) -> None:
        super().__init__()
        self.kwargs = {"lr": float(lr), "beta": float(beta)}
        self.lr, self.beta = float(lr), float(beta)
        self.feature_spec = FeatureSpec(("g",))

    def init_state(self, n_coords: int, device: torch.device | str | None = None) -> State:
        return {"buf": torch.zeros(n_coords, device=device)}

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        buf = self.beta * state["buf"] + features[:, 0]
        return -self.lr * buf, {"buf": buf}


@register_teacher("adam")
class AdamRule(Teacher):
    """``update = -lr * m_hat`` with the feature betas ``(beta1, beta2)`` and eps: exactly
    ``torch.optim.Adam`` (``m_hat`` is defined with Adam's ``sqrt(v_hat) + eps`` denominator)."""

    def __init__(
        self,
        lr: float = ADAM_LR,
        beta1: float = ADAM_BETAS[0],
        beta2: float = ADAM_BETAS[1],
        eps: float = ADAM_EPS,
    ) -> None:
        super().__init__()
        self.kwargs = {"lr": float(lr), "beta1": float(beta1), "beta2": float(beta2), "eps": float(eps)}
        self.lr = float(lr)
        self.feature_spec = FeatureSpec(("m_hat",), beta1=float(beta1), beta2=float(beta2), eps=float(eps))

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        return -self.lr * features[:, 0], dict(state)
