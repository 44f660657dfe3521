"""Coordinate-wise optimizer features and their lag history: the ONE definition used everywhere.

Teachers (numerical L2O models), the SR dataset collector and the SymbolicOptimizer all compute their
inputs here, so the three can never disagree on a definition, a constant or a lag order.

Every feature is a function of the gradient sequence ``g_1, g_2, ..., g_t`` of one coordinate, computed
for a flat vector of ``n`` coordinates at once (float32). ``t`` counts gradients seen, starting at 1.
With ``ema_b(h)_t = b * ema_b(h)_{t-1} + (1 - b) * h_t`` (``ema_b(h)_0 = 0``) and its bias-corrected
value ``ema_hat_b(h)_t = ema_b(h)_t / (1 - b**t)`` the features are:

==========  =======================================================================================
name        definition
==========  =======================================================================================
``g``       the gradient ``g_t``
``m_hat``   ``ema_hat_{beta1}(g) / (sqrt(ema_hat_{beta2}(g**2)) + eps)``  (RNNprop / Adam direction)
``g_hat``   ``g_t / (sqrt(ema_hat_{beta2}(g**2)) + eps)``
``mXY``     ``ema_hat_{X.Y}(g)``: bias-corrected EMA momentum, beta read from the digits after ``m``:
            ``m05`` (0.5), ``m09`` (0.9), ``m099`` (0.99), ``m0999`` (0.999), ``m095`` (0.95), ...
``mnXY``    p-norm normalised momentum ``ema_hat_b(g) / (ema_hat_b(|g|**p) ** (1/p) + eps)`` with the
            same beta ``b = X.Y`` in numerator and denominator and ``p = FeatureSpec.norm_p`` (default
            2, so ``mn09`` is Adam(0.9, 0.9)'s direction); always in ``[-1, 1]`` up to eps.
``eta``     the paper's learnable feature (Sec. 4.3): ``m_hat``'s formula with ``g`` replaced by
            ``k1*s(g, 1+a1) + k2*s(g, 1-a1)`` and ``g**2`` by ``|l1|*|g|**(2+a2) + |l2|*|g|**(2-a2)``,
            ``s(x, e) = sign(x)*|x|**e``; its six parameters ``(k1, k2, a1, l1, l2, a2)`` are
            ``FeatureSpec.eta_params`` (see :data:`ETA_PARAM_NAMES`).
==========  =======================================================================================

``beta1 = beta2 = 0.95`` (RNNprop, Lv et al. 2017) and ``eps = 1e-8`` by default. ``eps`` enters ONLY as
``sqrt(.) + eps`` in a denominator (Adam's placement), so ``-lr * m_hat`` with ``beta1, beta2 = 0.9, 0.999``
is exactly ``torch.optim.Adam``'s update. Scale-invariant features (``m_hat``, ``g_hat``, ``mn*``) do not
change when all gradients are multiplied by a positive constant (up to eps).

``eta`` departs from the paper's terse formula in three places, for well-posedness, and says so here
(the one definition): ``g**(1 +- a1)`` is sign-extended (``s(g, e)``) so ``eta`` keeps the sign of ``g``
as ``m_hat`` does; the denominator uses ``|l|`` and ``|g|`` so it stays positive like ``g**2``; and
``a1, a2`` are clipped to ``[-ETA_A_MAX, ETA_A_MAX]`` (0.5) so every exponent stays positive. With
``k1 = k2 = l1 = l2 = 0.5`` and ``a1 = a2 = 0``, ``eta`` equals ``m_hat``. Its parameters are data of the
spec (floats, saved with it); the functional API takes them as a differentiable tensor
(``eta_params=``), which is how RP(extra) meta-trains them (``teachers.rp``) and meta-tuning tunes them.

Lags: a :class:`History` keeps the last ``T = FeatureSpec.lags`` feature vectors as ``[n, F, T]`` with
**lag 0 = newest**; lags not yet seen are zeros and :meth:`History.valid` tells how many are real.
SR variables are named ``f"{feature}_{lag}"`` (:func:`variable_name`, :func:`parse_variable`), and the
flat row order of ``hist.reshape(n, F * T)`` is feature-major, lag-minor, matching
:meth:`FeatureSpec.variable_names`.

Two APIs over the same arithmetic:

* stateful :class:`FeatureState` (optimizers, collectors): ``feats = fs.update(grad_flat)``;
* functional ``state = spec.init(n); feats, state = spec.step(state, grad)`` (non-inplace, a plain
  ``dict[str, Tensor]`` state) for unrolled meta-training / meta-tuning. Gradients fed to features are
  treated as data: as in the L2O literature (Andrychowicz et al. 2016 and the paper's code), the
  gradient inputs are detached, so no second-order terms flow through the features; the functional
  form still never mutates its inputs, so it composes with autograd when a caller wants it to.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.features.names import MAX_LAG, feature_beta, is_variable_name, parse_variable, variable_name

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "ADAM_LR",
    "BASE_FEATURES",
    "ETA",
    "ETA_A_MAX",
    "ETA_DEFAULT_PARAMS",
    "ETA_PARAM_NAMES",
    "MAX_LAG",
    "FeatureSpec",
    "FeatureState",
    "History",
    "abs_pow",
    "eta_moment_inputs",
    "feature_beta",
    "is_feature",
    "is_variable_name",
    "log_sign_preprocess",
    "parse_variable",
    "signed_pow",
    "variable_name",
]

#: ``torch.optim.Adam``'s defaults: the one definition every Adam in the harness uses (the ``adam`` optimizer
#: family, the ``adam`` rule teacher, :func:`harness.symbolic.families.adam_equation`)
ADAM_LR: float = 1e-3
ADAM_BETAS: tuple[float, float] = (0.9, 0.999)
ADAM_EPS: float = 1e-8

#: the learnable feature of RP(extra) (the paper's Sec. 4.3)
ETA = "eta"
#: ``FeatureSpec.eta_params`` order
ETA_PARAM_NAMES: tuple[str, ...] = ("k1", "k2", "a1", "l1", "l2", "a2")
#: the parameters ``eta`` starts from: ``k = l = 0.5`` and small ``a`` (close to ``m_hat``)
ETA_DEFAULT_PARAMS: tuple[float, ...] = (0.5, 0.5, 0.1, 0.5, 0.5, 0.1)
#: ``|a1|, |a2|`` are clipped to this, so every exponent of ``eta`` stays positive
ETA_A_MAX = 0.5
#: features with a fixed name (the ``mXY`` / ``mnXY`` families are parsed, see :func:`feature_beta`)
BASE_FEATURES: tuple[str, ...] = ("g", "m_hat", "g_hat", ETA)
#: the default momentum features of RP(extra)
MOMENTUM_FEATURES: tuple[str, ...] = ("m05", "m09", "m099")
NORMALISED_MOMENTUM_FEATURES: tuple[str, ...] = ("mn05", "mn09", "mn099")


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def is_feature(name: str) -> bool:
    """Whether ``name`` is a feature this module can compute."""
    return name in BASE_FEATURES or feature_beta(name) is not None


# ------------------------------------------------------------------------------------------------
# raw pieces
# ------------------------------------------------------------------------------------------------
_TINY = 1e-30


def abs_pow(x: Tensor, e: Tensor | float) -> Tensor:
    """``|x| ** e`` with a finite gradient w.r.t. ``e`` at ``x = 0`` (|x| is clamped at 1e-30)."""
    return x.abs().clamp_min(_TINY) ** e


def signed_pow(x: Tensor, e: Tensor | float) -> Tensor:
    """Sign-extended power ``sign(x) * |x| ** e`` (the paper's extension of ``x^y`` to negative x)."""
    return torch.sign(x) * abs_pow(x, e)


def eta_moment_inputs(g: Tensor, params: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
    """What ``eta``'s two EMAs average: ``(k1*s(g, 1+a1) + k2*s(g, 1-a1), |l1|*|g|^(2+a2) + |l2|*|g|^(2-a2))``.

    ``params`` is ``(k1, k2, a1, l1, l2, a2)`` (:data:`ETA_PARAM_NAMES`), a float sequence or a tensor that
    gradients may flow into; ``a`` is clipped to ``[-ETA_A_MAX, ETA_A_MAX]`` (see the module docstring).
    """
    if isinstance(params, Tensor):
        p = params.to(dtype=g.dtype, device=g.device)
    else:
        p = _constant_tensor(tuple(float(v) for v in params), g.device, g.dtype)
    k1, k2, a1, l1, l2, a2 = p.unbind()
    a1 = a1.clamp(-ETA_A_MAX, ETA_A_MAX)
    a2 = a2.clamp(-ETA_A_MAX, ETA_A_MAX)
    # one log and two exps instead of four powers: s(g, 1 +- a) = g * |g|**(+-a), |g|**(2 +- a) = g*g * |g|**(+-a)
    log_abs = torch.log(g.abs().clamp_min(_TINY))
    p1 = torch.exp(a1 * log_abs)
    p2 = torch.exp(a2 * log_abs)
    num = g * (k1 * p1 + k2 / p1)
    den = (g * g) * (l1.abs() * p2 + l2.abs() / p2)
    return num, den


@functools.lru_cache(maxsize=64)
def _constant_tensor(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A cached constant tensor (the stateful step asks for the same ``eta`` parameters every step)."""
    return torch.tensor(values, dtype=dtype, device=device)


def log_sign_preprocess(g: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al. (2016) gradient preprocessing: ``[n] -> [n, 2]``.

    ``(log|g| / p, sign(g))`` where ``|g| >= exp(-p)``, else ``(-1, exp(p) * g)``.
    """
    big = g.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(g.abs().clamp_min(_TINY)) / p, torch.full_like(g, -1.0))
    second = torch.where(big, torch.sign(g), g * math.exp(p))
    return torch.stack([first, second], dim=-1)


# ------------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """Which features, with which constants, and how many lags a consumer needs.

    Args:
        names: feature names in column order (see the module docstring for the definitions).
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
                cols.append((acc["eta_m"] / corr(self.beta1)) / (torch.sqrt(v_hat + _TINY) + self.eps))
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


# ------------------------------------------------------------------------------------------------
# history
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# stateful API
# ------------------------------------------------------------------------------------------------
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


def spec_union(specs: Iterable[FeatureSpec]) -> tuple[str, ...]:
    """Feature names of several specs, in first-seen order (helper for consumers that merge)."""
    seen: list[str] = []
    for spec in specs:
        for name in spec.names:
            if name not in seen:
                seen.append(name)
    return tuple(seen)


def select(features: Tensor, spec: FeatureSpec, names: Sequence[str]) -> Tensor:
    """Columns ``names`` of a ``[n, F, ...]`` feature tensor laid out by ``spec``."""
    idx = torch.tensor([spec.index(n) for n in names], device=features.device)
    return features.index_select(1, idx)
