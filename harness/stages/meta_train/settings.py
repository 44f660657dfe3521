"""A meta_train stage's settings: the typed ``settings:`` model derived from ``MetaTrainConfig``, its checks,
and the config one trial runs; torch-free, so ``sl2o validate`` checks a suite without importing torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from harness.stages.base import settings_model
from teachers.config import MetaTrainConfig

_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MetaTrainConfig))
#: MetaTrainConfig fields a stage's ``settings`` may set (teacher/optimizee/seed come from the grid)
SETTINGS_FIELDS = tuple(
    f
    for f in _CONFIG_FIELDS
    if f not in ("teacher", "teacher_kwargs", "optimizee", "optimizee_kwargs", "seed")
)


#: the typed model of a stage's (or a teacher's) ``settings:``, derived from ``MetaTrainConfig``
MetaTrainSettings = settings_model(
    "MetaTrainSettings",
    MetaTrainConfig,
    what="meta-training",
    exclude=tuple(f for f in _CONFIG_FIELDS if f not in SETTINGS_FIELDS),
)


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse unknown or invalid meta-training settings with a message naming them."""
    bad = sorted(set(settings) - set(SETTINGS_FIELDS))
    if bad:
        raise ValueError(
            f"unknown meta-training setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS_FIELDS)}"
        )
    make_config({"name": "rp"}, {"name": "quadratic_cos"}, 0, settings)


def make_config(
    teacher: Mapping[str, Any], optimizee: Mapping[str, Any], seed: int, settings: Mapping[str, Any]
) -> MetaTrainConfig:
    """A ``MetaTrainConfig`` from a stage's teacher spec, optimizee spec, seed and settings."""
    return MetaTrainConfig(
        teacher=teacher["name"],
        teacher_kwargs=dict(teacher.get("kwargs", {})),
        optimizee=optimizee["name"],
        optimizee_kwargs=dict(optimizee.get("kwargs", {})),
        seed=int(seed),
        **dict(settings),
    )


#: a teacher "learned" when its best validation loss is at least this fraction below its initial one
LEARN_MARGIN = 0.05
#: the key under which a checkpoint keeps the initial validation loss beside the trainer state
INITIAL_VAL_KEY = "initial_val_loss"
