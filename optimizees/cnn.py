"""Torchvision CNNs (ResNet-18/50/152, MobileNetV2) on CIFAR-10/100 or offline digits, adapted to 32x32 inputs.

``dataset: digits`` (``digits32``) trains offline (:mod:`optimizees.data`). BatchNorm: ``loss(params,
batch)`` normalises with batch statistics and mutates no buffer (a pure function of ``params`` for unrolled
updates); ``module()`` is an ordinary model; ``evaluate(params)`` re-estimates the running statistics on a
private copy over ``bn_calibration_batches`` training batches (never validation examples), so its result
depends only on ``params``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from optimizees.classification import ClassificationOptimizee, random_crop_flip
from optimizees.data import SPLIT_SEED

ARCHS: tuple[str, ...] = ("resnet18", "resnet50", "resnet152", "mobilenet_v2")
#: datasets whose mirror images keep their class (random horizontal flips are sound augmentation)
FLIP_DATASETS: tuple[str, ...] = ("cifar10", "cifar100")
#: names ``dataset`` may take that stand for another: a CNN needs digits in their image form
DATASET_ALIASES: dict[str, str] = {"digits": "digits32"}


def _small_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _resnet18_width(width: int, num_classes: int) -> Any:
    """torchvision's ResNet-18 (``BasicBlock``, ``[2, 2, 2, 2]``) with base width ``width`` instead of 64
    (stages ``width, 2w, 4w, 8w``); torchvision fixes the widths, so the stages are rebuilt here."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(BasicBlock, width, 2)
    model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
    model.fc = nn.Linear(8 * width, num_classes)
    for m in model.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def build_cnn(arch: str, num_classes: int, width: int | None = None) -> nn.Module:
    """An untrained torchvision model for 32x32 inputs (3x3 stride-1 stem; no max-pool for ResNets).
    ``width`` (ResNet-18 only) sets the base width; None keeps torchvision's 64."""
    from torchvision import models

    if arch not in ARCHS:
        raise ValueError(f"unknown CNN arch {arch!r}; choose one of {', '.join(ARCHS)}")
    model: Any
    if width is not None:
        if arch != "resnet18":
            raise ValueError(f"cnn: width applies to resnet18 only, not {arch!r}; drop `width`")
        model = _resnet18_width(int(width), num_classes)
    else:
        model = getattr(models, arch)(weights=None, num_classes=num_classes)
    if arch.startswith("resnet"):
        model.conv1 = _small_conv(3, model.conv1.out_channels)
        model.maxpool = nn.Identity()
    else:  # mobilenet_v2: features[0] is Conv2dNormActivation(conv, bn, relu6)
        stem = model.features[0][0]
        model.features[0][0] = _small_conv(3, stem.out_channels)
    return model


class CNNClassifier(ClassificationOptimizee):
    """Cross-entropy of a torchvision CNN on CIFAR or digits32 (per-channel normalisation).

    Args:
        seed, device: see :class:`~optimizees.base.Optimizee`.
        arch: ``resnet18``, ``resnet50``, ``resnet152`` or ``mobilenet_v2``.
        dataset: ``cifar10``, ``cifar100``, ``digits32`` or ``digits16`` (offline; alias ``digits``).
        width: ResNet-18's base width (default None: torchvision's 64); e.g. 16 for CPU-sized runs.
        augment: random crop (padding 4) of training batches, plus a horizontal flip where ``flip``
            says so, drawn from the seed.
        flip: flip in ``augment``; None (default): only for datasets whose mirror images keep their
            class (CIFAR), so digits are cropped, never flipped. Setting it needs ``augment: true``.
        bn_calibration_batches: training batches used by ``evaluate`` to re-estimate BatchNorm statistics.
        batch_size, root, download, max_train, max_test, test_batch_size, val_fraction: see
            :class:`~optimizees.classification.ClassificationOptimizee`.
    """

    allowed_datasets = ("cifar10", "cifar100", "digits32", "digits16")

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        arch: str = "resnet18",
        dataset: str = "cifar10",
        width: int | None = None,
        batch_size: int = 128,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
        test_batch_size: int = 1000,
        val_fraction: float = 0.0,
        augment: bool = False,
        flip: bool | None = None,
        bn_calibration_batches: int = 20,
    ) -> None:
        if arch not in ARCHS:
            raise ValueError(f"cnn: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise ValueError(f"cnn: width must be a positive whole number, got {width!r}")
        if width is not None and arch != "resnet18":
            raise ValueError(f"cnn: width applies to resnet18 only, not {arch!r}; drop `width`")
        if bn_calibration_batches < 1:
            raise ValueError(f"cnn: bn_calibration_batches must be >= 1, got {bn_calibration_batches}")
        if flip is not None and not augment:
            raise ValueError("cnn: `flip` applies only to augmentation; set `augment: true` or drop `flip`")
        dataset = DATASET_ALIASES.get(dataset, dataset)
        self.arch = arch
        self.width = width
        self.augment = bool(augment)
        self.flip = dataset in FLIP_DATASETS if flip is None else bool(flip)
        self.bn_calibration_batches = int(bn_calibration_batches)
        self._eval_module: nn.Module | None = None
        super().__init__(
            seed=seed,
            device=device,
            dataset=dataset,
            batch_size=batch_size,
            root=root,
            download=download,
            max_train=max_train,
            max_test=max_test,
            test_batch_size=test_batch_size,
            val_fraction=val_fraction,
        )

    def _build_module(self) -> nn.Module:
        return build_cnn(self.arch, self.num_classes, self.width)

    @property
    def template(self) -> nn.Module:
        """Training-mode model whose BatchNorm layers use batch statistics and keep no running ones."""
        if self._template is None:
            tmpl = self.module()
            for m in tmpl.modules():
                if isinstance(m, _BatchNorm):
                    m.track_running_stats = False
            self._template = tmpl
        return self._template

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        return random_crop_flip(x, g, flip=self.flip) if self.augment else x

    def _calibration_inputs(self) -> list[Tensor]:
        """Fixed training batches (seed-independent, no augmentation) for BatchNorm re-estimation."""
        g = torch.Generator().manual_seed(SPLIT_SEED)
        n = self.num_train
        perm = torch.randperm(n, generator=g).to(self.device)
        if self._train_idx is not None:
            perm = self._train_idx[perm]
        out = []
        for i in range(0, min(n, self.bn_calibration_batches * self.batch_size), self.batch_size):
            out.append(self.data.prepare(self.data.x_train[perm[i : i + self.batch_size]]))
        return out

    def _eval_forward(self, params: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
        if self._eval_module is None:
            self._eval_module = self.module()
            for m in self._eval_module.modules():
                if isinstance(m, _BatchNorm):
                    m.momentum = None  # cumulative average over the calibration batches
        mod = self._eval_module
        for m in mod.modules():
            if isinstance(m, _BatchNorm):
                m.reset_running_stats()
        mod.train()
        for x in self._calibration_inputs():
            functional_call(mod, params, (x,))
        mod.eval()
        return lambda x: functional_call(mod, params, (x,))
