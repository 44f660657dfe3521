"""The keyword arguments of each built-in optimizee, with their bounds: one pydantic model per optimizee.

Registered beside each optimizee (``OPTIMIZEES.register(name, "module:Class", params=Model)``), so a suite's
``kwargs:`` are checked (names, types, sizes) by ``sl2o validate`` without importing torch, and the optimizee
checks the same model when it is built. The bounds keep a model buildable on one machine: a few GiB of
float32 weights at most. Field names and defaults match the constructors (a test checks they do).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the largest hidden width, layer count and weight count of an MLP optimizee
MAX_MLP_WIDTH = 65_536
MAX_MLP_LAYERS = 64
MAX_MLP_WEIGHTS = 10**9
#: the largest base width of the ResNet-18 optimizee (64 is torchvision's; 256 is ~180 M weights)
MAX_RESNET_WIDTH = 256
#: the largest dimension of the quadratic (its matrix is dim x dim)
MAX_QUADRATIC_DIM = 4096
#: the largest batch (train or test) of a dataset optimizee
MAX_BATCH = 65_536
#: the char_lm bounds: alphabet, width, layers, the chain's table (contexts x alphabet entries), symbols in
#: the generated corpus (int64: 8 bytes each)
MAX_VOCAB = 1024
MAX_LM_WIDTH = 8192
MAX_LM_LAYERS = 16
MAX_CHAIN_ENTRIES = 2**24
MAX_CORPUS_SYMBOLS = 2**28


class OptimizeeParams(BaseModel):
    """Base of the kwargs models: unknown names, non-finite numbers and
    coercions (a string for a number, a bool for an int) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class QuadraticParams(OptimizeeParams):
    dim: int = Field(default=10, ge=1, le=MAX_QUADRATIC_DIM)


class DatasetParams(OptimizeeParams):
    """What every dataset optimizee takes (:class:`optimizees.classification.DatasetOptimizee`)."""

    dataset: str
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH)
    root: str | None = None
    download: bool = False
    max_train: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    test_batch_size: int = Field(default=1000, ge=1, le=MAX_BATCH)
    val_fraction: float = Field(default=0.0, ge=0, lt=1)


#: what every classification optimizee takes (the same as any dataset optimizee)
ClassificationParams = DatasetParams


def check_hidden(hidden: list[int]) -> None:
    """ValueError unless every width is in ``1..MAX_MLP_WIDTH`` and the weights between consecutive hidden
    layers stay within ``MAX_MLP_WEIGHTS``."""
    if any(not 1 <= h <= MAX_MLP_WIDTH for h in hidden):
        raise ValueError(f"hidden widths must be 1..{MAX_MLP_WIDTH}, got {hidden}")
    weights = sum(math.prod(pair) for pair in zip(hidden, hidden[1:], strict=False))
    if weights > MAX_MLP_WEIGHTS:
        raise ValueError(
            f"hidden {hidden} has {weights:.3g} weights between hidden layers; at most "
            f"{MAX_MLP_WEIGHTS:.0e} (4 GB of float32)"
        )


class MLPParams(ClassificationParams):
    dataset: str = "digits"
    hidden: list[int] = Field(default=[50, 20], max_length=MAX_MLP_LAYERS)

    @model_validator(mode="after")
    def _size(self) -> MLPParams:
        check_hidden(self.hidden)
        return self


class LogRegParams(ClassificationParams):
    dataset: str = "digits"
    l2: float = Field(default=0.0, ge=0, le=1e6)


class AutoencoderParams(DatasetParams):
    dataset: str = "digits"
    hidden: list[int] = Field(default=[32], max_length=MAX_MLP_LAYERS)
    latent: int = Field(default=8, ge=1, le=MAX_MLP_WIDTH)

    @model_validator(mode="after")
    def _size(self) -> AutoencoderParams:
        check_hidden([*self.hidden, self.latent])
        return self


class CharLMParams(OptimizeeParams):
    arch: Literal["gru", "lstm", "transformer"] = "gru"
    vocab: int = Field(default=16, ge=2, le=MAX_VOCAB)
    order: int = Field(default=2, ge=1, le=24)
    alpha: float = Field(default=0.1, gt=0, le=1e6)
    seq_len: int = Field(default=32, ge=1, le=65_536)
    num_train: int = Field(default=2048, ge=1)
    num_test: int = Field(default=512, ge=1)
    hidden: int = Field(default=64, ge=1, le=MAX_LM_WIDTH)
    layers: int = Field(default=1, ge=1, le=MAX_LM_LAYERS)
    heads: int = Field(default=4, ge=1, le=256)
    data_seed: int = Field(default=0, ge=0, le=2**63 - 1)
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH)
    test_batch_size: int = Field(default=512, ge=1, le=MAX_BATCH)
    val_fraction: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _size(self) -> CharLMParams:
        entries = self.vocab ** (self.order + 1)
        if entries > MAX_CHAIN_ENTRIES:
            raise ValueError(
                f"vocab {self.vocab} and order {self.order} make a chain of {entries:.3g} probabilities "
                f"(vocab ** (order + 1)); at most {MAX_CHAIN_ENTRIES:.3g}"
            )
        symbols = (self.num_train + self.num_test) * (self.seq_len + 1)
        if symbols > MAX_CORPUS_SYMBOLS:
            raise ValueError(
                f"(num_train + num_test) * (seq_len + 1) = {symbols:.3g} symbols; "
                f"at most {MAX_CORPUS_SYMBOLS:.3g}"
            )
        if self.arch == "transformer" and self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden}) for the transformer")
        return self


class CNNParams(ClassificationParams):
    arch: str = "resnet18"
    dataset: str = "cifar10"
    width: int | None = Field(default=None, ge=1, le=MAX_RESNET_WIDTH)
    augment: bool = False
    flip: bool | None = None
    bn_calibration_batches: int = Field(default=20, ge=1, le=10_000)
