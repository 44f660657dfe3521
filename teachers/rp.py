"""RNNprop (Lv et al., 2017) and the paper's variants RP(small) and RP(extra).

``update = out_scale * tanh(Linear(LSTM(ELU(Linear(inputs)))))`` with inputs ``m_hat, g_hat`` (bias-
corrected EMAs, beta1 = beta2 = 0.95) plus, for RP(extra), further scale-invariant features and the
learnable power feature ``eta`` of the paper's section 4.3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from harness.features import ETA, ETA_A_MAX, ETA_DEFAULT_PARAMS, FeatureSpec, is_feature
from teachers.base import LSTMStack, State, Teacher, register_teacher


class LearnablePowerFeature(nn.Module):
    """RP(extra)'s trainable ``eta`` (the paper's Sec. 4.3), as defined once in :mod:`harness.features`.

    The six parameters ``(k1, k2, a1, l1, l2, a2)`` (:data:`~harness.features.ETA_PARAM_NAMES`) are
    trainable here: ``k`` and ``l`` directly, ``a = ETA_A_MAX * tanh(a_raw)`` so every exponent stays
    positive without a clip that would stop the gradient. :meth:`params` gives their current values in
    :func:`~harness.features.eta_moment_inputs`' order, which is also what a checkpoint's SR features
    record (:meth:`RP.input_features`). The EMAs live in the teacher state (``eta_m``, ``eta_v``,
    ``eta_t``) so gradients reach k, l, a. At initialisation ``eta`` is close to ``m_hat``.
    """

    def __init__(self, beta1: float = 0.95, beta2: float = 0.95, eps: float = 1e-8) -> None:
        super().__init__()
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        k1, k2, a1, l1, l2, a2 = ETA_DEFAULT_PARAMS
        self.k = nn.Parameter(torch.tensor([k1, k2]))
        self.l = nn.Parameter(torch.tensor([l1, l2]))
        self.a_raw = nn.Parameter(torch.atanh(torch.tensor([a1, a2]) / ETA_A_MAX))
        self._arith = FeatureSpec((ETA,), 1, self.beta1, self.beta2, self.eps)  # parameters come per call

    def params(self) -> Tensor:
        """``(k1, k2, a1, l1, l2, a2)`` as one differentiable tensor."""
        a1, a2 = (ETA_A_MAX * torch.tanh(self.a_raw)).unbind()
        return torch.stack([self.k[0], self.k[1], a1, self.l[0], self.l[1], a2])

    def spec(self, lags: int = 1) -> FeatureSpec:
        """A FeatureSpec computing ``eta`` alone with the current parameters (floats)."""
        values = tuple(float(v) for v in self.params().detach())
        return FeatureSpec((ETA,), lags, self.beta1, self.beta2, self.eps, eta_params=values)

    def init_state(self, n: int, device: torch.device | str | None = None) -> State:
        return {
            "eta_m": torch.zeros(n, device=device),
            "eta_v": torch.zeros(n, device=device),
            "eta_t": torch.zeros((), device=device),
        }

    def forward(self, g: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        t = state["eta_t"] + 1
        acc = {"eta_m": state["eta_m"], "eta_v": state["eta_v"]}
        feats, new = self._arith.advance(acc, g, t, eta_params=self.params())
        return feats[:, 0], {"eta_m": new["eta_m"], "eta_v": new["eta_v"], "eta_t": t}


@register_teacher("rp")
class RP(Teacher):
    """RNNprop: inputs ``m_hat, g_hat`` (+ ``extra``) -> Linear(proj) + ELU -> LSTM -> ``out_scale * tanh``.

    Args:
        hidden: LSTM hidden size (20).
        layers: LSTM layers (2; RP(small) and RP(extra) use 1).
        proj: input projection size (20; RP(small) and RP(extra) use 6).
        out_scale: bound of the per-coordinate step (0.01).
        beta1, beta2, eps: constants of ``m_hat``/``g_hat`` (and of ``eta``).
        extra: further inputs: feature names of ``harness.features`` (``m09``, ``mn09``, ...) and/or
            ``"eta"`` (the learnable power feature).
    """

    default_layers: int = 2
    default_proj: int = 20
    default_extra: tuple[str, ...] = ()

    def __init__(
        self,
        hidden: int = 20,
        layers: int | None = None,
        proj: int | None = None,
        out_scale: float = 0.01,
        beta1: float = 0.95,
        beta2: float = 0.95,
        eps: float = 1e-8,
        extra: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        layers = self.default_layers if layers is None else int(layers)
        proj = self.default_proj if proj is None else int(proj)
        extra = list(self.default_extra if extra is None else extra)
        bad = [e for e in extra if e != ETA and not is_feature(e)]
        if bad:
            raise ValueError(f"unknown extra feature(s) {bad} for {type(self).__name__}")
        self.kwargs = {
            "hidden": int(hidden),
            "layers": layers,
            "proj": proj,
            "out_scale": float(out_scale),
            "beta1": float(beta1),
            "beta2": float(beta2),
            "eps": float(eps),
            "extra": extra,
        }
        self.out_scale = float(out_scale)
        self.use_eta = ETA in extra
        plain = [e for e in extra if e != ETA and e not in ("m_hat", "g_hat")]
        names = ["m_hat", "g_hat", *plain]
        self.n_inputs = len(names) + int(self.use_eta)
        if self.use_eta and "g" not in names:
            names.append("g")  # raw gradient for eta only, not a network input
        self.feature_spec = FeatureSpec(tuple(names), beta1=float(beta1), beta2=float(beta2), eps=float(eps))
        self._n_plain = 2 + len(plain)
        self.eta = LearnablePowerFeature(beta1, beta2, eps) if self.use_eta else None
        self.proj = nn.Linear(self.n_inputs, proj)
        self.lstm = LSTMStack(proj, int(hidden), layers)
        self.out = nn.Linear(int(hidden), 1)
        nn.init.zeros_(self.out.bias)

    def init_state(self, n_coords: int, device: torch.device | str | None = None) -> State:
        state = self.lstm.init_state(n_coords, device)
        if self.eta is not None:
            state.update(self.eta.init_state(n_coords, device))
        return state

    def input_features(self) -> FeatureSpec:
        """``m_hat, g_hat``, the plain extras, and ``eta`` with its current parameters (not the raw ``g``
        that only feeds eta)."""
        if self.eta is None:
            return self.feature_spec
        names = [n for n in self.feature_spec.names[: self._n_plain]] + [ETA]
        return dataclasses.replace(
            self.feature_spec, names=tuple(names), eta_params=self.eta.spec().eta_params
        )

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        x = features[:, : self._n_plain]
        new: State = {}
        if self.eta is not None:
            eta, new = self.eta(self.column(features, "g"), state)
            x = torch.cat([x, eta.unsqueeze(-1)], dim=-1)
        h, lstm_state = self.lstm(F.elu(self.proj(x)), state)
        new.update(lstm_state)
        return self.out_scale * torch.tanh(self.out(h).squeeze(-1)), new


@register_teacher("rp_small")
class RPSmall(RP):
    """RP(small): input projection 6 and one LSTM layer (the paper's Table 3)."""

    default_layers = 1
    default_proj = 6


@register_teacher("rp_extra")
class RPExtra(RP):
    """RP(extra): RP(small)'s architecture with the paper's three input types G = {m_hat, g_hat, eta}
    (Sec. 4.3; ``eta`` is learnable). Further features (``mn09``, ``m09``, ...) can be added through
    ``extra=``; only scale-invariant ones (``mnXY``) keep the rule independent of the loss scale."""

    default_layers = 1
    default_proj = 6
    default_extra = (ETA,)
