"""The keyword arguments of each built-in optimizee, with their bounds: one pydantic model per optimizee.

Registered beside each optimizee (``OPTIMIZEES.register(name, "module:Class", params=Model)``), so a suite's
``kwargs:`` are checked (names, types, sizes) by ``sl2o validate`` without importing torch, and the optimizee
checks the same model when it is built. The bounds keep a model buildable on one machine: a few GiB of
float32 weights at most. Field names and defaults match the constructors (a test checks they do).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the largest hidden width, layer count and weight count of an MLP optimizee
MAX_MLP_WIDTH = 65_536
MAX_MLP_LAYERS = 64
MAX_MLP_WEIGHTS = 10**9
#: the largest base width of the ResNet-18 optimizee (64 is torchvision's; 256 is ~180 M weights)
MAX_RESNET_WIDTH = 256
#: the largest dimension of the quadratic (its matrix is dim x dim)
MAX_QUADRATIC_DIM = 4096
#: the largest batch (train or test) of a classification optimizee
MAX_BATCH = 65_536


class OptimizeeParams(BaseModel):
    """Base of the kwargs models: unknown names, non-finite numbers and
    coercions (a string for a number, a bool for an int) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class QuadraticParams(OptimizeeParams):
    dim: int = Field(default=10, ge=1, le=MAX_QUADRATIC_DIM)


class ClassificationParams(OptimizeeParams):
    """What every classification optimizee takes (:class:`optimizees.classification.ClassificationOptimizee`)."""

    dataset: str
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH)
    root: str | None = None
    download: bool = False
    max_train: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    test_batch_size: int = Field(default=1000, ge=1, le=MAX_BATCH)
    val_fraction: float = Field(default=0.0, ge=0, lt=1)


class MLPParams(ClassificationParams):
    dataset: str = "digits"
    hidden: list[int] = Field(default=[50, 20], max_length=MAX_MLP_LAYERS)

    @model_validator(mode="after")
    def _size(self) -> MLPParams:
        if any(not 1 <= h <= MAX_MLP_WIDTH for h in self.hidden):
            raise ValueError(f"hidden widths must be 1..{MAX_MLP_WIDTH}, got {self.hidden}")
        weights = sum(math.prod(pair) for pair in zip(self.hidden, self.hidden[1:], strict=False))
        if weights > MAX_MLP_WEIGHTS:
            raise ValueError(
                f"hidden {self.hidden} has {weights:.3g} weights between hidden layers; at most "
                f"{MAX_MLP_WEIGHTS:.0e} (4 GB of float32)"
            )
        return self


class CNNParams(ClassificationParams):
    arch: str = "resnet18"
    dataset: str = "cifar10"
    width: int | None = Field(default=None, ge=1, le=MAX_RESNET_WIDTH)
    augment: bool = False
    flip: bool | None = None
    bn_calibration_batches: int = Field(default=20, ge=1, le=10_000)
