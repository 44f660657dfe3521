"""RNNprop (Lv et al., 2017) and the paper's variants RP(small) and RP(extra).

``update = out_scale * tanh(Linear(LSTM(ELU(Linear(inputs)))))`` with inputs ``m_hat, g_hat`` (bias-
corrected EMAs, beta1 = beta2 = 0.95) plus, for RP(extra), further scale-invariant features and the
learnable power feature ``eta`` of the paper's section 4.3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from harness.features import FeatureSpec, abs_pow, is_feature, signed_pow
from teachers.base import LSTMStack, State, Teacher, register_teacher

#: the learnable feature's name in ``extra``
ETA = "eta"


class LearnablePowerFeature(nn.Module):
    """The paper's trainable RP(extra) feature ``eta``: ``m_hat`` with ``g`` and ``g**2`` replaced.

    ``num_t = k1 * s(g, 1 + a1) + k2 * s(g, 1 - a1)`` with ``s(x, e) = sign(x)|x|^e``;
    ``den_t = |l1| * |g|^(2 + a2) + |l2| * |g|^(2 - a2)``;
    ``eta = ema_hat_b1(num) / (sqrt(ema_hat_b2(den)) + eps)``.
    Deviations from the paper's terse description, for well-posedness: the denominator uses ``|g|`` and
    ``|l|`` so it stays positive (like ``g**2``), and ``a = a_max * tanh(a_raw)`` keeps every exponent
    positive (``a_max = 0.5``). At initialisation (k = l = 0.5, a ~ 0.1) eta is close to ``m_hat``.
    Its EMAs live in the teacher state (``eta_m``, ``eta_v``, ``eta_t``) so gradients reach k, l, a.
    """

    def __init__(
        self, beta1: float = 0.95, beta2: float = 0.95, eps: float = 1e-8, a_max: float = 0.5
    ) -> None:
        super().__init__()
        self.beta1, self.beta2, self.eps, self.a_max = float(beta1), float(beta2), float(eps), float(a_max)
        self.k = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.l = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.a_raw = nn.Parameter(torch.tensor([0.2, 0.2]))

    def init_state(self, n: int, device: torch.device | str | None = None) -> State:
        return {
            "eta_m": torch.zeros(n, device=device),
            "eta_v": torch.zeros(n, device=device),
            "eta_t": torch.zeros((), device=device),
        }

    def forward(self, g: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        a1, a2 = (self.a_max * torch.tanh(self.a_raw)).unbind()
        num = self.k[0] * signed_pow(g, 1 + a1) + self.k[1] * signed_pow(g, 1 - a1)
        lab = self.l.abs()
        den = lab[0] * abs_pow(g, 2 + a2) + lab[1] * abs_pow(g, 2 - a2)
        t = state["eta_t"] + 1
        m = self.beta1 * state["eta_m"] + (1 - self.beta1) * num
        v = self.beta2 * state["eta_v"] + (1 - self.beta2) * den
        v_hat = v / (1 - self.beta2**t)
        eta = (m / (1 - self.beta1**t)) / (torch.sqrt(v_hat + 1e-30) + self.eps)
        return eta, {"eta_m": m, "eta_v": v, "eta_t": t}


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
    """RP(extra): RP(small)'s architecture (as in the paper) plus extra inputs, by default the
    p-norm normalised momenta ``mn05, mn09, mn099`` and the learnable ``eta``. Raw momenta
    (``m05, m09, m099``) can be added through ``extra=`` but are not scale-invariant."""

    default_layers = 1
    default_proj = 6
    default_extra = ("mn05", "mn09", "mn099", ETA)
