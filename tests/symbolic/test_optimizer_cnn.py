"""SymbolicOptimizer on a real CNN: eq. 6 trains ResNet-18 (torchvision, BatchNorm) on offline digits32.

The CPU case is tiny (three steps on one batch of 16 digits); its CUDA twin runs the same check on a GPU and is
skipped, with the reason, where there is none.
"""

from __future__ import annotations

import math

import torch

from harness.symbolic.families import eq6
from harness.symbolic.optim.optimizer import SymbolicOptimizer
from optimizees import CNNClassifier

STEPS = 3


def test_eq6_trains_resnet18_on_digits32(device: str) -> None:
    problem = CNNClassifier(
        seed=0, device=device, arch="resnet18", dataset="digits", batch_size=16, max_train=64, max_test=16
    )
    batch = next(problem.batches("train"))
    assert batch.inputs is not None and batch.inputs.shape == (16, 3, 32, 32)
    assert batch.inputs.device.type == device
    model = problem.module()
    opt = SymbolicOptimizer(model.parameters(), eq6(("m_hat", "g_hat"), L=2))
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = problem.module_loss(model, batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(problem.module_loss(model, batch)))
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses  # it fits the batch: about 2.3 -> 0.2
    assert all(p.device.type == device and torch.isfinite(p).all() for p in model.parameters())
