"""Power and ``eta`` arithmetic on gradient tensors: the raw pieces the features are built from.

Sign-extended and gradient-safe powers, the two inputs ``eta``'s EMAs average (its formula and the
clipping of ``a1, a2`` are in ``docs/symbolic.md``), and the log/sign gradient preprocessing of DM.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from harness.features.vocabulary import ETA_A_MAX

__all__ = ["TINY", "abs_pow", "eta_moment_inputs", "log_sign_preprocess", "signed_pow"]

#: the floor of ``|x|`` under a log or a power, so gradients w.r.t. the exponent stay finite at 0
TINY = 1e-30


def abs_pow(x: Tensor, e: Tensor | float) -> Tensor:
    """``|x| ** e`` with a finite gradient w.r.t. ``e`` at ``x = 0`` (|x| is clamped at 1e-30)."""
    return x.abs().clamp_min(TINY) ** e


def signed_pow(x: Tensor, e: Tensor | float) -> Tensor:
    """Sign-extended power ``sign(x) * |x| ** e`` (the paper's extension of ``x^y`` to negative x)."""
    return torch.sign(x) * abs_pow(x, e)


def eta_moment_inputs(g: Tensor, params: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
    """What ``eta``'s two EMAs average: ``(k1*s(g, 1+a1) + k2*s(g, 1-a1), |l1|*|g|^(2+a2) + |l2|*|g|^(2-a2))``.

    ``params`` is ``(k1, k2, a1, l1, l2, a2)`` (:data:`~harness.features.vocabulary.ETA_PARAM_NAMES`), a
    float sequence or a tensor that gradients may flow into; ``a`` is clipped to ``[-ETA_A_MAX, ETA_A_MAX]``
    (see ``docs/symbolic.md``).
    """
    if isinstance(params, Tensor):
        p = params.to(dtype=g.dtype, device=g.device)
    else:
        p = _constant_tensor(tuple(float(v) for v in params), g.device, g.dtype)
    k1, k2, a1, l1, l2, a2 = p.unbind()
    a1 = a1.clamp(-ETA_A_MAX, ETA_A_MAX)
    a2 = a2.clamp(-ETA_A_MAX, ETA_A_MAX)
    # one log and two exps instead of four powers: s(g, 1 +- a) = g * |g|**(+-a), |g|**(2 +- a) = g*g * |g|**(+-a)
    log_abs = torch.log(g.abs().clamp_min(TINY))
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
    first = torch.where(big, torch.log(g.abs().clamp_min(TINY)) / p, torch.full_like(g, -1.0))
    second = torch.where(big, torch.sign(g), g * math.exp(p))
    return torch.stack([first, second], dim=-1)
