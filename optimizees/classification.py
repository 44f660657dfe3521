"""Shared machinery of the dataset optimizees: data and seeded batches (:class:`DatasetOptimizee`, also under
the autoencoder) and, for classifiers (MLP, CNN, logistic regression, the character LM), cross-entropy and
accuracy (:class:`ClassificationOptimizee`).

``batches("train")`` is an infinite stream, each epoch a permutation seeded by the optimizee seed (the last
batch may be smaller); ``test`` and ``val`` are one pass in fixed order. With ``val_fraction > 0`` a fixed,
stratified subset of the training examples is held out as ``val``, drawn with ``SPLIT_SEED`` (the same for
every seed); ``num_train`` and ``steps_per_epoch`` count only the rest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from optimizees.base import Batch, Optimizee, check_eval_split
from optimizees.data import SPLIT_SEED, ArrayDataset, load_dataset


def _subsample(n: int, k: int | None, device: torch.device) -> Tensor | None:
    """Indices of a fixed (seed-independent) random subset of size ``k`` of ``range(n)``, or None."""
    if k is None or k >= n:
        return None
    if k < 1:
        raise ValueError(f"subsample size must be >= 1, got {k}")
    g = torch.Generator().manual_seed(SPLIT_SEED)
    return torch.randperm(n, generator=g)[:k].sort().values.to(device)


def check_val_fraction(val_fraction: float) -> float:
    """``val_fraction`` as a float, or ValueError unless it is a number in ``[0, 1)``."""
    ok = isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
    if not ok or not 0.0 <= val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be a number in [0, 1) (the share of training examples held out "
            f"for validation, e.g. 0.1), got {val_fraction!r}"
        )
    return float(val_fraction)


def stratified_holdout(y: Tensor, fraction: float) -> tuple[Tensor, Tensor]:
    """Positions ``(held_out, kept)`` (each sorted) of a fixed stratified ``fraction`` of labels ``y``.

    The examples are ordered by class, in a random order within each class drawn from ``SPLIT_SEED``
    (seed-independent), and every ``1/fraction``-th one along that order is held out (systematic
    sampling): ``floor(len(y) * fraction)`` examples in all, each class giving the floor or the ceiling
    of its share.
    """
    n = len(y)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(n, generator=g)
    order = perm[torch.argsort(y.cpu()[perm], stable=True)]
    i = torch.arange(n, dtype=torch.float64)
    take = torch.floor((i + 1) * fraction) > torch.floor(i * fraction)
    return order[take].sort().values, order[~take].sort().values


def _inputs(batch: Batch) -> Tensor:
    """The inputs of a classification batch; a data-free ``Batch()`` here is a bug."""
    if batch.inputs is None:
        raise ValueError("a classification batch needs inputs, got Batch(inputs=None)")
    return batch.inputs


def _targets(batch: Batch) -> Tensor:
    """The class labels of a classification batch; a data-free ``Batch()`` here is a bug."""
    if batch.targets is None:
        raise ValueError("a classification batch needs targets, got Batch(targets=None)")
    return batch.targets


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits ``[..., C]`` against class labels ``[...]`` (one label per example or per
    sequence position), averaged (``mean``) or summed (``sum``) over every label."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction=reduction)


def random_crop_flip(x: Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Per-sample random crop (zero padding ``pad``) and, if ``flip``, random horizontal flip of images
    ``[B, C, H, W]`` (``flip=False``: crop only, e.g. for digits, whose mirror images are not digits)."""
    b, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=dev)  # [B, W]
    # non-adjacent advanced indices put the broadcast dims first: [B, H, W, C]
    out = xp[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    if not flip:
        return out
    flips = (torch.rand(b, generator=g) < 0.5).to(dev)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


class DatasetOptimizee(Optimizee):
    """A loss on a dataset held as tensors (:class:`~optimizees.data.ArrayDataset`): the data, the ``val``
    hold-out and the seeded batch streams. Subclasses define the model and the loss.

    Args:
        seed: initial weights and batch order.
        device: where the model and the whole dataset live.
        dataset: a name from :data:`optimizees.data.DATASETS` (subclasses restrict it).
        batch_size: training minibatch size.
        root: data directory for torchvision datasets (default ``$SL2O_DATA`` or ``./data``).
        download: let torchvision download a missing dataset.
        max_train: keep a fixed random subset of this many training samples (the same for every seed).
        max_test: likewise for the test set (faster evaluation).
        test_batch_size: batch size of the test and validation passes.
        val_fraction: hold out this fraction of the training examples (after ``max_train``) as the fixed,
            stratified ``val`` split; 0 (default): none. In ``[0, 1)``, leaving an example on each side.
    """

    default_steps = 1000
    allowed_datasets: tuple[str, ...] = ()

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        dataset: str,
        batch_size: int = 128,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        max_train: int | None = None,
        max_test: int | None = None,
        test_batch_size: int = 1000,
        val_fraction: float = 0.0,
    ) -> None:
        super().__init__(seed=seed, device=device)
        self.val_fraction = check_val_fraction(val_fraction)
        if self.allowed_datasets and dataset not in self.allowed_datasets:
            raise ValueError(
                f"{type(self).__name__}: unknown dataset {dataset!r}; "
                f"choose one of {', '.join(self.allowed_datasets)}"
            )
        if batch_size < 1 or test_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {test_batch_size}")
        self.dataset_name = dataset
        self.batch_size = int(batch_size)
        self.test_batch_size = int(test_batch_size)
        self.data: ArrayDataset = self._load_data(dataset, root, download)
        #: indices into ``data.x_train`` of the training examples (None: all of them)
        self._train_idx = _subsample(len(self.data.y_train), max_train, self.device)
        self._test_idx = _subsample(len(self.data.y_test), max_test, self.device)
        #: indices into ``data.x_train`` of the validation examples (None: no ``val`` split)
        self._val_idx: Tensor | None = None
        if self.val_fraction > 0:
            self._hold_out_val()

    def _load_data(self, dataset: str, root: str | os.PathLike[str] | None, download: bool) -> ArrayDataset:
        """The whole dataset on ``self.device`` (default: :func:`optimizees.data.load_dataset`; generated
        tasks override it)."""
        return load_dataset(dataset, root=root, download=download, device=self.device)

    def _strata(self, pool: Tensor) -> Tensor:
        """One label per training example of ``pool`` to stratify the ``val`` hold-out by (default: the
        class labels; a task without per-example classes returns one stratum)."""
        return self.data.y_train[pool]

    def _hold_out_val(self) -> None:
        """Move a stratified ``val_fraction`` of the training examples into the ``val`` split."""
        n = self.num_train
        pool = torch.arange(n, device=self.device) if self._train_idx is None else self._train_idx
        held, kept = stratified_holdout(self._strata(pool), self.val_fraction)
        if len(held) < 1 or len(kept) < 1:
            raise ValueError(
                f"{type(self).__name__}: val_fraction={self.val_fraction} of {n} training examples leaves "
                f"{len(held)} for validation and {len(kept)} for training; each needs at least 1"
            )
        self._val_idx = pool[held.to(self.device)]
        self._train_idx = pool[kept.to(self.device)]

    # -- data ----------------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        return len(self.data.y_train) if self._train_idx is None else len(self._train_idx)

    @property
    def num_test(self) -> int:
        return len(self.data.y_test) if self._test_idx is None else len(self._test_idx)

    @property
    def num_val(self) -> int:
        """Validation examples (0 without ``val_fraction``)."""
        return 0 if self._val_idx is None else len(self._val_idx)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_train / self.batch_size)

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Training-time augmentation of raw stored inputs (none by default)."""
        return x

    def _batch(self, x: Tensor, y: Tensor) -> Batch:
        """The batch of stored inputs ``x`` (already augmented) and labels ``y``: prepared inputs and the
        labels as targets (an autoencoder overrides it: its targets are its inputs)."""
        return Batch(self.data.prepare(x), y)

    def batches(self, split: str = "train") -> Iterator[Batch]:
        if split == "train":
            return self._train_batches()
        if split == "test":
            return self._eval_batches(self.data.x_test, self.data.y_test, self._test_idx)
        if split == "val":
            if self._val_idx is None:
                raise ValueError(
                    f"{type(self).__name__} has no 'val' split: set `val_fraction` (e.g. 0.1) in the "
                    f"optimizee's kwargs to hold out part of the training set for validation"
                )
            return self._eval_batches(self.data.x_train, self.data.y_train, self._val_idx)
        raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")

    def _train_batches(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed)
        n = self.num_train
        while True:
            perm = torch.randperm(n, generator=g).to(self.device)
            if self._train_idx is not None:
                perm = self._train_idx[perm]
            for i in range(0, n, self.batch_size):
                idx = perm[i : i + self.batch_size]
                x = self._augment(self.data.x_train[idx], g)
                yield self._batch(x, self.data.y_train[idx])

    def _eval_batches(self, xs: Tensor, ys: Tensor, index: Tensor | None) -> Iterator[Batch]:
        """One pass in fixed order over ``xs[index]`` (all of ``xs`` when ``index`` is None)."""
        n = len(ys) if index is None else len(index)
        for i in range(0, n, self.test_batch_size):
            if index is None:
                x, y = xs[i : i + self.test_batch_size], ys[i : i + self.test_batch_size]
            else:
                idx = index[i : i + self.test_batch_size]
                x, y = xs[idx], ys[idx]
            yield self._batch(x, y)

    def init_params(self) -> dict[str, Tensor]:
        """Detached copies of the template's (never updated) initial parameters; avoids a model rebuild."""
        return {k: v.detach().clone() for k, v in self.template.named_parameters()}


class ClassificationOptimizee(DatasetOptimizee):
    """Cross-entropy of a classifier on a dataset from :mod:`optimizees.data`.

    Targets are class labels, one per example (``[B]``, logits ``[B, C]``) or one per position (``[B, T]``,
    logits ``[B, T, C]``: a sequence model); the loss and the accuracy average over every target.
    Arguments: see :class:`DatasetOptimizee`.
    """

    is_classification = True

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    # -- objective -----------------------------------------------------------------------------
    def logits(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Class scores of ``params`` on ``batch`` through the (training-mode) template."""
        return functional_call(self.template, params, (_inputs(batch),))

    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Mean cross-entropy over every target; differentiable w.r.t. ``params``."""
        return cross_entropy(self.logits(params, batch), _targets(batch))

    def module_loss(self, module: nn.Module, batch: Batch) -> Tensor:
        """Mean cross-entropy of a plain module called directly (its own buffers update as usual)."""
        return cross_entropy(module(_inputs(batch)), _targets(batch))

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_forward(self, params: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
        """A function mapping test or validation inputs to logits for ``params`` (subclasses may
        prepare state, from training examples only)."""
        return lambda x: functional_call(self.template, params, (x,))

    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor], split: str = "test") -> dict[str, float]:
        """Cross-entropy and accuracy on ``split`` (``test`` or ``val``), one forward pass per batch:
        ``{"<split>_loss", "<split>_acc"}``."""
        check_eval_split(split)
        batches = self.batches(split)  # fails before any work if there is no such split
        forward = self._eval_forward(params)
        total, correct, n = 0.0, 0, 0
        for batch in batches:
            logits = forward(_inputs(batch))
            targets = _targets(batch)
            total += float(cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(-1) == targets).sum())
            n += targets.numel()
        return {f"{split}_loss": total / max(n, 1), f"{split}_acc": correct / max(n, 1)}
