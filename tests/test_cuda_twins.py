"""CUDA twins: the optimizees' and teachers' device paths, each case run on CPU and (skipped, with the reason,
where there is none) on a GPU. SymbolicOptimizer's twin is tests/symbolic/test_optimizer_cnn.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.registry import OPTIMIZEES, TEACHERS
from teachers.optimizer import TeacherOptimizer

OPTIMIZEES_SMALL = {
    "quadratic_cos": {},
    "mlp": {"dataset": "digits", "hidden": [8], "batch_size": 16},
}


@pytest.mark.parametrize("name", sorted(OPTIMIZEES_SMALL))
def test_an_optimizee_lives_on_its_device(name: str, device: str, one_thread) -> None:
    problem = OPTIMIZEES.get(name)(seed=0, device=device, **OPTIMIZEES_SMALL[name])
    params = {k: p.detach().requires_grad_(True) for k, p in problem.init_params().items()}
    assert all(p.device.type == device for p in params.values())
    batch = next(problem.batches("train"))
    loss = problem.loss(params, batch)
    assert loss.device.type == device and math.isfinite(float(loss))
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(g.device.type == device and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("teacher", ["rp_small", "dm"])
def test_a_teacher_steps_an_optimizee_on_its_device(teacher: str, device: str, one_thread) -> None:
    torch.manual_seed(0)
    problem = OPTIMIZEES.get("quadratic_cos")(seed=0, device=device)
    model = problem.module()
    opt = TeacherOptimizer(model.parameters(), TEACHERS.get(teacher)().to(device))
    batch = next(problem.batches("train"))
    for _ in range(3):
        opt.zero_grad()
        loss = problem.module_loss(model, batch)
        loss.backward()
        opt.step()
    assert all(p.device.type == device and torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(float(problem.module_loss(model, batch).detach()))
