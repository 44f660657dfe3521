# the facade's exports: harness/features/__init__.py loads them lazily from here (lazy_loader.attach_stub),
# so importing one light module (names, vocabulary) does not import torch
from .arithmetic import abs_pow, eta_moment_inputs, log_sign_preprocess, signed_pow
from .columns import select, spec_union
from .history import History
from .names import MAX_LAG, feature_beta, is_variable_name, parse_variable, variable_name
from .spec import FeatureSpec
from .state import FeatureState
from .vocabulary import (
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
