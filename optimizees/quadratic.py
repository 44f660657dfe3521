"""P1 from the paper: ``min_x ||A x + b||^2 + 0.5 c^T cos(x)`` with A, b, c ~ N(0, 1) drawn from the seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optimizees.base import Batch, Optimizee


class QuadraticCosModule(nn.Module):
    """Holds the variable ``x`` as a parameter and the problem data A, b, c as buffers."""

    # buffers registered in __init__ (``nn.Module.__getattr__`` alone types them as ``Tensor | Module``)
    A: Tensor
    b: Tensor
    c: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("A", torch.randn(dim, dim))
        self.register_buffer("b", torch.randn(dim))
        self.register_buffer("c", torch.randn(dim))
        self.x = nn.Parameter(torch.randn(dim))

    def forward(self) -> Tensor:
        """The objective at the current ``x``."""
        r = self.A @ self.x + self.b
        return r.square().sum() + 0.5 * (self.c * torch.cos(self.x)).sum()


class QuadraticCos(Optimizee):
    """P1: a data-free non-convex problem; the seed draws A, b, c and the initial x (all N(0, 1)).

    Args:
        seed: problem data and initial point.
        device: where x and the data live.
        dim: number of variables (A is ``dim x dim``; the paper uses 10).
    """

    default_steps = 100

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu", *, dim: int = 10) -> None:
        super().__init__(seed=seed, device=device)
        if dim < 1:
            raise ValueError(f"quadratic_cos: dim must be >= 1, got {dim}")
        self.dim = int(dim)

    def _build_module(self) -> nn.Module:
        return QuadraticCosModule(self.dim)

    def loss(self, params: dict[str, Tensor], batch: Batch) -> Tensor:
        """The objective at ``params['x']`` (the batch is ignored)."""
        return functional_call(self.template, params, ())

    def module_loss(self, module: nn.Module, batch: Batch) -> Tensor:
        """The objective at a plain module's ``x``."""
        return module()

    def batches(self, split: str = "train") -> Iterator[Batch]:
        if split == "train":
            return _forever()
        if split in ("test", "val"):  # no data to hold out: val is the objective itself, as test
            return iter([Batch()])
        raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")


def _forever() -> Iterator[Batch]:
    while True:
        yield Batch()
