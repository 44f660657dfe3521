"""The optimizee interface: a seeded optimization problem with a functional loss and plain nn.Module.

The constructor arguments and ``seed`` fix the initial parameters, the problem data and (on CPU) the
batch order. ``loss(params, batch)`` goes through ``torch.func.functional_call`` (differentiable unrolls);
``module()`` serves ordinary training. Splits: ``train`` (infinite), ``test`` (held out until the final
report) and ``val`` (model selection; data-free problems such as P1 serve ``test``'s objective as ``val``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: the splits ``evaluate`` scores (``train`` is a stream, not an evaluation set)
EVAL_SPLITS: tuple[str, ...] = ("test", "val")


def check_eval_split(split: str) -> None:
    """Raise ValueError unless ``split`` is one of :data:`EVAL_SPLITS`."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"evaluate: unknown split {split!r}; use 'test' or 'val'")


@dataclass
class Batch:
    """One minibatch; both fields are None for problems without data (P1)."""

    inputs: Tensor | None = None
    targets: Tensor | None = None


class Optimizee(ABC):
    """A seeded optimization problem.

    Subclasses implement ``_build_module`` (called under the instance's seed), ``loss`` and
    ``batches``; the defaults below fail loudly rather than guess.

    Args:
        seed: determines initial parameters, problem data and batch order.
        device: where parameters and batches live.
    """

    #: default training budget in steps when a config gives neither steps nor epochs
    default_steps: int = 100
    #: whether ``evaluate`` reports an accuracy
    is_classification: bool = False

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self._template: nn.Module | None = None

    # -- model ---------------------------------------------------------------------------------
    @abstractmethod
    def _build_module(self) -> nn.Module:
        """Build the model; called under ``torch.manual_seed(self.seed)`` so its init is seeded."""

    def module(self) -> nn.Module:
        """A fresh module holding the seeded initial parameters (identical on every call)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mod = self._build_module()
        return mod.to(self.device)

    @property
    def template(self) -> nn.Module:
        """The module used by the functional loss (its own parameters are never updated)."""
        if self._template is None:
            self._template = self.module()
        return self._template

    def init_params(self) -> dict[str, Tensor]:
        """Detached copies of the seeded initial parameters, keyed by ``named_parameters`` names."""
        return {k: v.detach().clone() for k, v in self.module().named_parameters()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.template.parameters())

    # -- objective -----------------------------------------------------------------------------
    @abstractmethod
    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Scalar training loss of ``params`` on ``batch`` (differentiable w.r.t. params)."""

    def module_loss(self, module: nn.Module, batch: Batch) -> Tensor:
        """Loss of a plain module's current parameters on ``batch`` (ordinary training)."""
        return self.loss(dict(module.named_parameters()), batch)

    # -- data ----------------------------------------------------------------------------------
    @abstractmethod
    def batches(self, split: str = "train") -> Iterator[Batch]:
        """Batches of ``split``: ``train`` is infinite (reshuffled each epoch under the seed),
        ``test`` is one pass over the held-out set, ``val`` one pass over the validation set.

        ``val`` is part of the training data held out from ``train`` (classifiers: ``val_fraction``; a
        classifier without one raises ValueError); a data-free problem yields for ``val`` the same as
        for ``test``. Any other split is a ValueError.
        """

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the training set (1 for data-free problems)."""
        return 1

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor], split: str = "test") -> dict[str, float]:
        """Held-out metrics of ``params`` on ``split`` (``test`` or ``val``): ``<split>_loss`` and, for
        classifiers, ``<split>_acc`` (``test_loss``/``test_acc`` by default)."""
        check_eval_split(split)
        total, n, correct = 0.0, 0, 0
        for batch in self.batches(split):
            k = 1 if batch.targets is None else int(batch.targets.shape[0])
            total += float(self.loss(params, batch)) * k
            if self.is_classification:
                logits = self.logits(params, batch)
                correct += int((logits.argmax(-1) == batch.targets).sum())
            n += k
        out = {f"{split}_loss": total / max(n, 1)}
        if self.is_classification:
            out[f"{split}_acc"] = correct / max(n, 1)
        return out

    def logits(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """Model outputs for ``batch`` (classifiers only)."""
        raise NotImplementedError(f"{type(self).__name__} is not a classifier")
