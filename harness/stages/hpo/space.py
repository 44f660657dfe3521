"""An hpo stage's search space as Optuna distributions, and the optimizer config each proposal stands for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: space fields that are not config fields: Adam's betas are sampled one by one
BETA_FIELDS = ("beta1", "beta2")


def distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the sampled fields of ``space`` (:func:`search_spaces.load_space`)."""
    import optuna

    out: dict[str, Any] = {}
    for key, val in space["params"].items():
        if isinstance(val, dict):
            out[key] = optuna.distributions.FloatDistribution(val["low"], val["high"], log=val["log"])
        elif isinstance(val, list):
            out[key] = optuna.distributions.CategoricalDistribution(val)
    return out


def fixed_fields(space: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``space`` every proposal gets as they are (neither a range nor choices)."""
    return {k: v for k, v in space["params"].items() if not isinstance(v, (dict, list))}


def proposal_config(
    base: Mapping[str, Any], space: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The optimizer config of one proposal: ``base`` (family, equation, the stage's fixed fields), the
    space's fixed fields, then the sampled ``values`` (``beta1``/``beta2`` become ``betas``)."""
    config = {**dict(base), **fixed_fields(space)}
    for key, val in values.items():
        if key not in BETA_FIELDS:
            config[key] = val
    if any(k in values for k in BETA_FIELDS):
        from harness.features import ADAM_BETAS

        config["betas"] = [
            float(values.get(BETA_FIELDS[0], ADAM_BETAS[0])),
            float(values.get(BETA_FIELDS[1], ADAM_BETAS[1])),
        ]
    if config.get("nesterov") and not config.get("momentum"):
        config["nesterov"] = False  # torch refuses Nesterov without momentum; the space may allow momentum 0
    return config
