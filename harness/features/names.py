"""Names of features and of SR variables (``feature_lag``): the one parser, and the lag bound.

Re-exported by the facade :mod:`harness.features`; pure string handling, no torch.
"""

from __future__ import annotations

import re

__all__ = ["MAX_LAG", "feature_beta", "is_variable_name", "parse_variable", "variable_name"]

_EMA_RE = re.compile(r"(mn|m)(0\d+)")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: ``feature_lag``: the feature an identifier, the lag a non-negative int without leading zeros
_VARIABLE_RE = re.compile(r"([A-Za-z][A-Za-z0-9_]*)_(0|[1-9][0-9]*)")
MAX_LAG = 1000
"""The largest lag a variable may name (``g_1000``); a history is at most ``MAX_LAG + 1`` long. Variable
names come from untrusted equation text, and a lag sizes the history a consumer allocates."""


def feature_beta(name: str) -> tuple[str, float] | None:
    """``("m", 0.9)`` for ``"m09"``, ``("mn", 0.99)`` for ``"mn099"``; None for other names."""
    match = _EMA_RE.fullmatch(name)
    if match is None:
        return None
    kind, digits = match.groups()
    beta = float(f"{digits[0]}.{digits[1:]}")
    if not 0.0 < beta < 1.0:
        return None
    return kind, beta


def variable_name(feature: str, lag: int) -> str:
    """The SR / equation symbol of ``feature`` at ``lag`` (0 = newest): ``"m_hat_3"``."""
    if not _NAME_RE.fullmatch(feature) or "__" in feature or feature.endswith("_"):
        raise ValueError(
            f"bad feature name {feature!r}: use an identifier without dots, '__' or a trailing '_'"
        )
    if not 0 <= int(lag) <= MAX_LAG:
        raise ValueError(f"lag must be in 0..{MAX_LAG} (MAX_LAG), got {lag}")
    return f"{feature}_{int(lag)}"


def parse_variable(name: str) -> tuple[str, int]:
    """Inverse of :func:`variable_name`: split on the LAST underscore, ``"m_hat_3" -> ("m_hat", 3)``.

    The one parser of variable names (the equation layer's ``split_variable`` is this function). Strict:
    the feature is an identifier without ``__``, the lag a non-negative int without leading zeros
    (``g_03`` is refused, so every variable has exactly one spelling) and at most :data:`MAX_LAG`; raises
    ValueError otherwise.
    """
    match = _VARIABLE_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None or "__" in name:
        shown = repr(name[:60] + "...") if isinstance(name, str) and len(name) > 60 else repr(name)
        raise ValueError(f"{shown} is not a variable name of the form feature_lag (e.g. g_0, m_hat_3)")
    digits = match.group(2)
    if len(digits) > len(str(MAX_LAG)) or int(digits) > MAX_LAG:
        shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
        raise ValueError(f"variable {match.group(1)}_{shown}: lag {shown} is over the maximum lag {MAX_LAG}")
    return match.group(1), int(digits)


def is_variable_name(name: str) -> bool:
    """True for names :func:`parse_variable` accepts."""
    try:
        parse_variable(name)
    except ValueError:
        return False
    return True
