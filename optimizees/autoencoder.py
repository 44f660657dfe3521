"""An MLP autoencoder: reconstruction mean squared error on the flattened inputs of a dataset (digits by
default, offline), a non-convex regression problem with no labels in its loss.

The encoder narrows through ``hidden`` to a linear ``latent`` bottleneck; the decoder mirrors it. Batches
carry the prepared inputs as both ``inputs`` and ``targets``; ``evaluate`` reports ``<split>_loss``, the
mean squared error per input feature (standardised digits: predicting zero everywhere scores 1.01 on
the test split).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from optimizees.base import Batch
from optimizees.classification import DatasetOptimizee, _inputs
from optimizees.data import DATASETS


class MLPAutoencoder(nn.Module):
    """Flatten, Linear+ReLU per ``hidden`` width, a Linear bottleneck of ``latent`` units, then the mirror
    image (Linear+ReLU per reversed width) and a Linear output reshaped to the input's shape (torch default
    init)."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], latent: int) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        features = math.prod(self.input_shape)
        widths = [features, *(int(h) for h in hidden)]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:], strict=False):
            enc += [nn.Linear(a, b), nn.ReLU()]
        enc.append(nn.Linear(widths[-1], latent))
        dec: list[nn.Module] = []
        back = [latent, *reversed(widths[1:])]
        for a, b in zip(back, back[1:], strict=False):
            dec += [nn.Linear(a, b), nn.ReLU()]
        dec.append(nn.Linear(back[-1], features))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (same shape)."""
        return self.decoder(self.encoder(x)).view(-1, *self.input_shape)


class Autoencoder(DatasetOptimizee):
    """Reconstruction MSE of an MLP autoencoder (``hidden=[32], latent=8`` on digits by default).

    Args:
        seed, device: see :class:`~optimizees.base.Optimizee`.
        dataset: any of :data:`optimizees.data.DATASETS`, flattened (``digits`` default; ``mnist1d``,
            ``digits16``/``digits32`` offline as well).
        hidden: the encoder's hidden widths (the decoder uses them reversed); may be empty (a linear
            autoencoder, whose optimum is PCA's subspace).
        latent: bottleneck width.
        batch_size, root, download, max_train, max_test, test_batch_size, val_fraction: see
            :class:`~optimizees.classification.DatasetOptimizee` (the ``val`` hold-out is stratified by the
            dataset's class labels, which the loss never reads).
    """

    allowed_datasets = DATASETS
    default_steps = 1000

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        dataset: str = "digits",
        hidden: Sequence[int] = (32,),
        latent: int = 8,
        batch_size: int = 128,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
        test_batch_size: int = 1000,
        val_fraction: float = 0.0,
    ) -> None:
        if isinstance(hidden, int) or any(int(h) < 1 for h in hidden):
            raise ValueError(f"autoencoder: hidden must be a list of positive widths, got {hidden!r}")
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ValueError(f"autoencoder: latent must be a positive whole number, got {latent!r}")
        self.hidden = [int(h) for h in hidden]
        self.latent = latent
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
        return MLPAutoencoder(self.data.input_shape, self.hidden, self.latent)

    def _batch(self, x: Tensor, y: Tensor) -> Batch:
        """The prepared inputs are also the targets (the class labels ``y`` are not used)."""
        inputs = self.data.prepare(x)
        return Batch(inputs, inputs)

    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Mean squared reconstruction error per feature; differentiable w.r.t. ``params``."""
        x = _inputs(batch)
        return F.mse_loss(functional_call(self.template, params, (x,)), x)

    def module_loss(self, module: nn.Module, batch: Batch) -> Tensor:
        """The same loss for a plain module called directly."""
        x = _inputs(batch)
        return F.mse_loss(module(x), x)
