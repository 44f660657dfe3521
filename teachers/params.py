"""The keyword arguments of each built-in teacher, with their bounds: one pydantic model per teacher.

Registered beside each teacher (``TEACHERS.register(name, "module:Class", params=Model)``): a suite's
``kwargs:`` and a checkpoint's stored kwargs are checked against it before any module is built, without
importing torch for ``sl2o validate``. The bounds keep an LSTM teacher under ~70 M weights (a paper teacher
has ~5 k). Field names and defaults match the constructors (a test checks they do).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from harness.features.vocabulary import ADAM_BETAS, ADAM_EPS, ADAM_LR

#: the largest LSTM hidden size, layer count and input projection of a learned teacher
MAX_HIDDEN = 1024
MAX_LAYERS = 8
MAX_PROJ = 1024
#: the most extra input features of an RP teacher
MAX_EXTRA = 32


class TeacherParams(BaseModel):
    """Base of the kwargs models: unknown names, non-finite numbers and
    coercions (a string for a number, a bool for an int) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class LSTMParams(TeacherParams):
    hidden: int = Field(default=20, ge=1, le=MAX_HIDDEN)
    out_scale: float = Field(default=0.01, gt=0)


class RPParams(LSTMParams):
    """``rp``, ``rp_small``, ``rp_extra`` (None: the variant's own default)."""

    layers: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    proj: int | None = Field(default=None, ge=1, le=MAX_PROJ)
    beta1: float = Field(default=0.95, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    extra: list[str] | None = Field(default=None, max_length=MAX_EXTRA)


class DMParams(LSTMParams):
    layers: int = Field(default=2, ge=1, le=MAX_LAYERS)
    preprocess: bool = True
    preprocess_p: float = Field(default=10.0, gt=0)


class SGDParams(TeacherParams):
    lr: float = Field(default=0.01, gt=0)


class MomentumParams(SGDParams):
    beta: float = Field(default=0.9, ge=0, lt=1)


class AdamParams(TeacherParams):
    lr: float = Field(default=ADAM_LR, gt=0)
    beta1: float = Field(default=ADAM_BETAS[0], ge=0, lt=1)
    beta2: float = Field(default=ADAM_BETAS[1], ge=0, lt=1)
    eps: float = Field(default=ADAM_EPS, gt=0)
