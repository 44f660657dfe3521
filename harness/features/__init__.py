"""Coordinate-wise optimizer features and their lag history: the ONE definition used everywhere.

Teachers, the SR dataset collector and the SymbolicOptimizer all compute their inputs here, so they can never
disagree on a definition, a constant or a lag order. This facade only re-exports; the definitions of the
features are in ``docs/symbolic.md``.
"""

from harness.features.arithmetic import abs_pow, eta_moment_inputs, log_sign_preprocess, signed_pow
from harness.features.columns import select, spec_union
from harness.features.history import History
from harness.features.names import MAX_LAG, feature_beta, is_variable_name, parse_variable, variable_name
from harness.features.spec import FeatureSpec
from harness.features.state import FeatureState
from harness.features.vocabulary import (
    ADAM_BETAS,
    ADAM_EPS,
    ADAM_LR,
    BASE_FEATURES,
    ETA,
    ETA_A_MAX,
    ETA_DEFAULT_PARAMS,
    ETA_PARAM_NAMES,
    MOMENTUM_FEATURES,
    NORMALISED_MOMENTUM_FEATURES,
    is_feature,
)

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
    "MOMENTUM_FEATURES",
    "NORMALISED_MOMENTUM_FEATURES",
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
    "select",
    "signed_pow",
    "spec_union",
    "variable_name",
]
