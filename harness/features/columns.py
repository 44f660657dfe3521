"""Helpers over several specs' feature columns: merge their names, pick columns by name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from harness.features.spec import FeatureSpec

__all__ = ["select", "spec_union"]


def spec_union(specs: Iterable[FeatureSpec]) -> tuple[str, ...]:
    """Feature names of several specs, in first-seen order (helper for consumers that merge)."""
    seen: list[str] = []
    for spec in specs:
        for name in spec.names:
            if name not in seen:
                seen.append(name)
    return tuple(seen)


def select(features: Tensor, spec: FeatureSpec, names: Sequence[str]) -> Tensor:
    """Columns ``names`` of a ``[n, F, ...]`` feature tensor laid out by ``spec``."""
    idx = torch.tensor([spec.index(n) for n in names], device=features.device)
    return features.index_select(1, idx)
