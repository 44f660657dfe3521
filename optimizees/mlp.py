"""ReLU MLP classifiers (the paper's P2/P3 on MNIST, P4 on CIFAR-10; digits and mnist1d offline) and
multinomial logistic regression (the MLP without hidden layers, optionally L2-penalised)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from optimizees.base import Batch
from optimizees.classification import ClassificationOptimizee
from optimizees.data import DATASETS

#: the name of logistic regression's weight matrix (``MLP``'s only Linear layer, after the Flatten)
WEIGHT = "net.1.weight"


class MLP(nn.Module):
    """Flatten, then Linear+ReLU per hidden width, then a Linear output layer (torch default init)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPClassifier(ClassificationOptimizee):
    """Cross-entropy of a ReLU MLP; ``hidden=[50, 20]`` is P2, ``[50, 20, 20, 12]`` is P3.

    Args:
        seed, device: see :class:`~optimizees.base.Optimizee`.
        dataset: ``digits`` (default, offline), ``mnist1d`` (offline), ``digits32`` (offline, images),
            ``mnist``, ``cifar10``, ``cifar100``.
        hidden: hidden-layer widths.
        batch_size, root, download, max_train, max_test, test_batch_size, val_fraction: see
            :class:`~optimizees.classification.ClassificationOptimizee`.
    """

    allowed_datasets = DATASETS

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        dataset: str = "digits",
        hidden: Sequence[int] = (50, 20),
        batch_size: int = 128,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
        test_batch_size: int = 1000,
        val_fraction: float = 0.0,
    ) -> None:
        if isinstance(hidden, int) or any(int(h) < 1 for h in hidden):
            raise ValueError(f"mlp: hidden must be a list of positive widths, got {hidden!r}")
        self.hidden = [int(h) for h in hidden]
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
        return MLP(math.prod(self.data.input_shape), self.hidden, self.num_classes)


class LogisticRegression(MLPClassifier):
    """Multinomial logistic regression (convex): exactly ``mlp`` with ``hidden: []``, plus optional L2.

    One Linear layer and softmax cross-entropy; ``l2 > 0`` adds ``l2/2 * ||W||^2`` on the weight matrix (not
    the bias) to the training loss, which makes it strongly convex with a unique minimiser.

    ``evaluate`` reports the cross-entropy without the penalty (``test_loss``) and the accuracy.

    Args:
        seed, device, dataset: see :class:`MLPClassifier`; the features are the flattened inputs.
        l2: the penalty's weight (default 0: plain logistic regression, the same loss as ``mlp``).
        batch_size, root, download, max_train, max_test, test_batch_size, val_fraction: see
            :class:`~optimizees.classification.ClassificationOptimizee`.
    """

    default_steps = 500

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        dataset: str = "digits",
        l2: float = 0.0,
        batch_size: int = 128,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
        test_batch_size: int = 1000,
        val_fraction: float = 0.0,
    ) -> None:
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0.0 <= l2 < math.inf:
            raise ValueError(f"logreg: l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)
        super().__init__(
            seed=seed,
            device=device,
            dataset=dataset,
            hidden=(),
            batch_size=batch_size,
            root=root,
            download=download,
            max_train=max_train,
            max_test=max_test,
            test_batch_size=test_batch_size,
            val_fraction=val_fraction,
        )

    def _penalty(self, weight: Tensor) -> Tensor | float:
        """``l2/2 * ||weight||^2`` (0.0 without a penalty, so the loss is exactly ``mlp``'s)."""
        return 0.5 * self.l2 * weight.square().sum() if self.l2 > 0 else 0.0

    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Mean cross-entropy plus the L2 penalty; differentiable w.r.t. ``params``."""
        return super().loss(params, batch) + self._penalty(params[WEIGHT])

    def module_loss(self, module: nn.Module, batch: Batch) -> Tensor:
        """The same loss for a plain module's current parameters."""
        return super().module_loss(module, batch) + self._penalty(module.get_parameter(WEIGHT))
