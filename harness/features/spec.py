"""Which features, with which constants and lags: :class:`FeatureSpec`, and the arithmetic of both APIs.

Features of one coordinate's gradient sequence (float32; ``t`` counts gradients from 1): ``g``, ``m_hat``
(Adam's direction), ``g_hat`` (``g`` over Adam's denominator), ``mXY`` (bias-corrected EMA momentum, beta
``X.Y``), ``mnXY`` (p-norm normalised momentum), ``eta`` (RP(extra)'s learnable feature); definitions in
``docs/symbolic.md``. Functional API: ``state = spec.init(n); feats, state = spec.step(state, grad)`` (never
mutates its inputs); the stateful one is :class:`harness.features.state.FeatureState`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.features.arithmetic import TINY, eta_moment_inputs
from harness.features.names import MAX_LAG, feature_beta, variable_name
from harness.features.vocabulary import BASE_FEATURES, ETA, ETA_DEFAULT_PARAMS, ETA_PARAM_NAMES, is_feature

__all__ = ["FeatureSpec"]


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, with which constants, and how many lags a consumer needs.

    Args:
        names: feature names in column order (definitions: ``docs/symbolic.md``).
        lags: history length T (lag 0 = newest); 1 means current features only. SR uses 20.
        beta1: EMA rate of ``g`` inside ``m_hat``.
        beta2: EMA rate of ``g**2`` inside ``m_hat`` and ``g_hat``.
        eps: added to the square-root denominators (``sqrt(v_hat) + eps``).
        norm_p: the ``p`` of the normalised momenta ``mnXY``.
        eta_params: ``(k1, k2, a1, l1, l2, a2)`` of ``eta`` (only when ``eta`` is among the names; default
            :data:`ETA_DEFAULT_PARAMS`).
    """

    names: tuple[str, ...]
    lags: int = 1
    beta1: float = 0.95
    beta2: float = 0.95
    eps: float = 1e-8
    norm_p: float = 2.0
    eta_params: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise ValueError("FeatureSpec needs at least one feature name")
        unknown = [n for n in names if not is_feature(n)]
        if unknown:
            raise ValueError(
                f"unknown feature(s) {unknown}; known: {', '.join(BASE_FEATURES)}, "
                "mXY (EMA momentum with beta X.Y, e.g. m09), mnXY (normalised momentum, e.g. mn09)"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        if not 1 <= int(self.lags) <= MAX_LAG + 1:
            raise ValueError(f"lags must be in 1..{MAX_LAG + 1} (lags 0..MAX_LAG), got {self.lags}")
        object.__setattr__(self, "lags", int(self.lags))
        for key in ("beta1", "beta2"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.eps < 0 or self.norm_p <= 0:
            raise ValueError("eps must be >= 0 and norm_p > 0")
        if ETA not in names:
            if self.eta_params is not None:
                raise ValueError("eta_params given but 'eta' is not among the features")
        else:
            raw = ETA_DEFAULT_PARAMS if self.eta_params is None else self.eta_params
            try:
                params = tuple(float(v) for v in raw)
            except (TypeError, ValueError):
                raise ValueError(f"eta_params must be {len(ETA_PARAM_NAMES)} numbers, got {raw!r}") from None
            if len(params) != len(ETA_PARAM_NAMES) or not all(math.isfinite(v) for v in params):
                raise ValueError(
                    f"eta_params must be {len(ETA_PARAM_NAMES)} finite numbers "
                    f"({', '.join(ETA_PARAM_NAMES)}), got {raw!r}"
                )
            object.__setattr__(self, "eta_params", params)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Column of feature ``name``."""
        return self.names.index(name)

    def variable_names(self) -> list[str]:
        """Names of the columns of ``history.reshape(n, F * T)``: feature-major, lag-minor."""
        return [variable_name(f, lag) for f in self.names for lag in range(self.lags)]

    def with_lags(self, lags: int) -> FeatureSpec:
        """The same features with a different history length."""
        return dataclasses.replace(self, lags=lags)

    def constants(self) -> dict[str, Any]:
        """The constants of the features (everything but names and lags), as :meth:`to_dict` spells them."""
        d = self.to_dict()
        del d["names"], d["lags"]
        return d

    # -- what state is needed ----------------------------------------------------------------------
    def accumulators(self) -> dict[str, tuple[str, float]]:
        """State tensors the features need: key -> (kind, beta); kind is ``g`` (EMA of g),
        ``g2`` (EMA of g**2) or ``gp`` (EMA of |g|**p). Nothing is kept that no feature uses."""
        acc: dict[str, tuple[str, float]] = {}
        for name in self.names:
            if name == "m_hat":
                acc["m"] = ("g", self.beta1)
                acc["v"] = ("g2", self.beta2)
            elif name == "g_hat":
                acc["v"] = ("g2", self.beta2)
            elif name == ETA:
                acc["eta_m"] = ("eta_num", self.beta1)
                acc["eta_v"] = ("eta_den", self.beta2)
            else:
                parsed = feature_beta(name)
                if parsed is None:
                    continue
                kind, beta = parsed
                acc[_ema_key(beta)] = ("g", beta)
                if kind == "mn":
                    acc[_pow_key(beta)] = ("gp", beta)
        return acc

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "names": list(self.names),
            "lags": self.lags,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "norm_p": self.norm_p,
        }
        if self.eta_params is not None:
            d["eta_params"] = list(self.eta_params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        d = dict(d)
        if d.get("eta_params") is not None:
            d["eta_params"] = tuple(d["eta_params"])
        return cls(names=tuple(d.pop("names")), **d)

    # -- functional API --------------------------------------------------------------------------------
    def init(
        self, n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        """Fresh functional state for ``n`` coordinates: ``t`` (0-dim), accumulators, and ``hist``
        (``[n, F, T]``, zeros) when ``lags > 1``."""
        state = {"t": torch.zeros((), device=device, dtype=dtype)}
        for key in self.accumulators():
            state[key] = torch.zeros(n, device=device, dtype=dtype)
        if self.lags > 1:
            state["hist"] = torch.zeros(n, self.num_features, self.lags, device=device, dtype=dtype)
        return state

    def step(
        self, state: Mapping[str, Tensor], grad: Tensor, *, eta_params: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One gradient in, current features ``[n, F]`` and the NEW state out; inputs are not mutated.
        ``eta_params`` overrides the spec's (a tensor gradients may flow into)."""
        g = grad.reshape(-1).to(state["t"].dtype)
        t = state["t"] + 1
        feats, acc = self.advance(state, g, t, eta_params=eta_params)
        new: dict[str, Tensor] = {"t": t, **acc}
        if self.lags > 1:
            new["hist"] = torch.cat([feats.unsqueeze(-1), state["hist"][..., :-1]], dim=-1)
        return feats, new

    def lagged(self, state: Mapping[str, Tensor]) -> Tensor:
        """``[n, F, T]`` history (lag 0 newest, zeros before filled) of a functional state."""
        if "hist" not in state:
            raise ValueError("this FeatureSpec has lags == 1: no history is kept")
        return state["hist"]

    def valid_lags(self, state: Mapping[str, Tensor]) -> int:
        """How many lags of a functional state's history hold real values."""
        return int(min(int(state["t"].item()), self.lags))

    # -- arithmetic shared by both APIs --------------------------------------------------------------
    def advance(
        self,
        acc: Mapping[str, Tensor],
        g: Tensor,
        t: Tensor | float,
        *,
        eta_params: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Without mutation: fold gradient ``g`` (the ``t``-th) into accumulators ``acc`` (keys of
        :meth:`accumulators`; other keys are ignored); return the current features ``[n, F]`` and the new
        accumulators. The functional twin of :meth:`update_` (same arithmetic). ``eta_params`` (a tensor,
        possibly requiring grad) overrides :attr:`eta_params`."""
        new: dict[str, Tensor] = {}
        inputs = _LazyInputs(self, g, eta_params)
        for key, (kind, beta) in self.accumulators().items():
            new[key] = beta * acc[key] + (1.0 - beta) * inputs[kind]
        return torch.stack(self._columns(g, t, new), dim=-1), new

    @torch.no_grad()
    def update_(self, acc: Mapping[str, Tensor], g: Tensor, t: float) -> Tensor:
        """In place: fold gradient ``g`` (the ``t``-th) into caller-owned accumulators ``acc`` (keys of
        :meth:`accumulators`) and return the current features ``[n, F]``. The stateful path of every
        consumer (FeatureState, SymbolicOptimizer) goes through here (or :meth:`update_columns_`)."""
        return torch.stack(self.update_columns_(acc, g, t), dim=-1)

    @torch.no_grad()
    def update_columns_(self, acc: Mapping[str, Tensor], g: Tensor, t: float) -> list[Tensor]:
        """:meth:`update_`'s features unstacked: ``[n]`` columns, ``names`` order (read-only; one may be g)."""
        inputs = _LazyInputs(self, g, None)
        for key, (kind, beta) in self.accumulators().items():
            if kind == "g":  # one pass each (the same EMAs up to float rounding)
                acc[key].lerp_(g, 1.0 - beta)
            elif kind == "g2":
                acc[key].mul_(beta).addcmul_(g, g, value=1.0 - beta)
            else:
                acc[key].mul_(beta).add_(inputs[kind], alpha=1.0 - beta)
        return self._columns(g, t, acc)

    def _columns(self, g: Tensor, t: Tensor | float, acc: Mapping[str, Tensor]) -> list[Tensor]:
        cols: list[Tensor] = []
        denom_v: Tensor | None = None

        def corr(beta: float) -> Tensor | float:
            return 1.0 - beta**t

        for name in self.names:
            if name == "g":
                cols.append(g)
            elif name == ETA:
                v_hat = acc["eta_v"] / corr(self.beta2)
                cols.append((acc["eta_m"] / corr(self.beta1)) / (torch.sqrt(v_hat + TINY) + self.eps))
            elif name in ("m_hat", "g_hat"):
                if denom_v is None:
                    denom_v = torch.sqrt(acc["v"] / corr(self.beta2)) + self.eps
                num = g if name == "g_hat" else acc["m"] / corr(self.beta1)
                cols.append(num / denom_v)
            else:
                parsed = feature_beta(name)
                assert parsed is not None, name  # FeatureSpec validated its names
                kind, beta = parsed
                m = acc[_ema_key(beta)] / corr(beta)
                if kind == "m":
                    cols.append(m)
                else:
                    norm = (acc[_pow_key(beta)] / corr(beta)) ** (1.0 / self.norm_p) + self.eps
                    cols.append(m / norm)
        return cols


class _LazyInputs:
    """The per-step inputs of the accumulators (``g``, ``g**2``, ``|g|**p``, eta's two), each computed once
    and only when an accumulator asks for it."""

    def __init__(self, spec: FeatureSpec, g: Tensor, eta_params: Tensor | None) -> None:
        self.spec, self.g, self.eta_params = spec, g, eta_params
        self.cache: dict[str, Tensor] = {}

    def __getitem__(self, kind: str) -> Tensor:
        if kind not in self.cache:
            g = self.g
            if kind == "g":
                self.cache[kind] = g
            elif kind == "g2":
                self.cache[kind] = g * g
            elif kind == "gp":
                p = self.spec.norm_p
                self.cache[kind] = g.abs() if p == 1.0 else g.abs() ** p
            else:
                params = self.eta_params if self.eta_params is not None else self.spec.eta_params
                assert params is not None, "eta accumulators without eta parameters"
                self.cache["eta_num"], self.cache["eta_den"] = eta_moment_inputs(g, params)
        return self.cache[kind]


def _ema_key(beta: float) -> str:
    return f"ema_{beta!r}".replace(".", "p")


def _pow_key(beta: float) -> str:
    return f"pow_{beta!r}".replace(".", "p")
