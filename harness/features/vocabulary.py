"""The feature vocabulary: which names are features, and the constants the whole harness shares.

Fixed names (``g``, ``m_hat``, ``g_hat``, ``eta``) plus the parsed ``mXY`` / ``mnXY`` families
(:func:`~harness.features.names.feature_beta`); Adam's defaults and ``eta``'s parameter layout live here once.
"""

from __future__ import annotations

from harness.features.names import feature_beta

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "ADAM_LR",
    "BASE_FEATURES",
    "ETA",
    "ETA_A_MAX",
    "ETA_DEFAULT_PARAMS",
    "ETA_PARAM_NAMES",
    "MOMENTUM_FEATURES",
    "NORMALISED_MOMENTUM_FEATURES",
    "is_feature",
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


def is_feature(name: str) -> bool:
    """Whether ``name`` is a feature the harness can compute."""
    return name in BASE_FEATURES or feature_beta(name) is not None
