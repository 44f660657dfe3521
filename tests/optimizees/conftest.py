"""Fixtures for optimizee tests: a tiny synthetic CIFAR stand-in, injected only inside tests."""

from __future__ import annotations

import pytest
import torch

from optimizees import classification
from optimizees.data import ArrayDataset, load_dataset


def tiny_cifar(n_train: int = 48, n_test: int = 20, num_classes: int = 10, size: int = 8) -> ArrayDataset:
    """Random uint8 images in CIFAR's storage format (8x8 keeps CPU time low; the CNNs pool adaptively)."""
    g = torch.Generator().manual_seed(123)
    return ArrayDataset(
        "cifar10",
        torch.randint(0, 256, (n_train, 3, size, size), generator=g, dtype=torch.uint8),
        torch.randint(0, num_classes, (n_train,), generator=g),
        torch.randint(0, 256, (n_test, 3, size, size), generator=g, dtype=torch.uint8),
        torch.randint(0, num_classes, (n_test,), generator=g),
        num_classes=num_classes,
        mean=torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1),
        std=torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1),
    )


@pytest.fixture
def fake_cifar(monkeypatch: pytest.MonkeyPatch) -> ArrayDataset:
    """Make the classifier optimizees see ``tiny_cifar`` for cifar10 (other datasets load normally)."""
    data = tiny_cifar()

    def fake_load(name: str, *args: object, **kwargs: object) -> ArrayDataset:
        return data if name == "cifar10" else load_dataset(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(classification, "load_dataset", fake_load)
    return data
