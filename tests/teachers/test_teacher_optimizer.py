"""TeacherOptimizer: hand rules equal torch.optim step for step; state_dict; checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.registry import TEACHERS
from harness.training.optimizers import build_optimizer
from teachers.checkpoint import (
    FORMAT,
    TeacherCheckpointError,
    load_teacher,
    read_checkpoint,
    save_teacher,
)
from teachers.optimizer import TeacherOptimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 6) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    ("rule", "kwargs", "make_ref"),
    [
        ("sgd", {"lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1)),
        ("momentum", {"lr": 0.05, "beta": 0.9}, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        ("adam", {"lr": 0.01}, lambda p: torch.optim.Adam(p, lr=0.01)),
        (
            "adam",
            {"lr": 0.003, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
            lambda p: torch.optim.Adam(p, lr=0.003, betas=(0.8, 0.95), eps=1e-6),
        ),
    ],
)
def test_hand_rules_match_torch(rule: str, kwargs: dict, make_ref) -> None:  # noqa: ANN001
    ref, mine = _model(), _model()
    _train(ref, make_ref(ref.parameters()))
    _train(mine, TeacherOptimizer(mine.parameters(), TEACHERS.get(rule)(**kwargs)))
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_param_groups_lr_multiplies_update_and_cosine_scheduler() -> None:
    ref, mine = _model(), _model()
    _train(
        ref,
        torch.optim.SGD(
            [{"params": ref[0].parameters(), "lr": 0.1}, {"params": ref[2].parameters()}], lr=0.2
        ),
    )
    groups = [{"params": mine[0].parameters(), "lr": 1.0}, {"params": mine[2].parameters(), "lr": 2.0}]
    _train(mine, TeacherOptimizer(groups, TEACHERS.get("sgd")(lr=0.1)))
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    model = _model()
    opt = TeacherOptimizer(model.parameters(), TEACHERS.get("sgd")(lr=0.1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_params_without_grad_are_zero_gradients() -> None:
    model = _model()
    model[2].bias.requires_grad_(False)
    before = model[2].bias.clone()
    _train(model, TeacherOptimizer(model.parameters(), TEACHERS.get("adam")(lr=0.01)), steps=2)
    assert torch.equal(model[2].bias, before)


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    teacher = TEACHERS.get("rp")()
    a = _model()
    opt_a = TeacherOptimizer(a.parameters(), teacher)
    _train(a, opt_a, steps=3)
    b = copy.deepcopy(a)
    opt_b = TeacherOptimizer(b.parameters(), teacher)
    sd = opt_a.state_dict()
    assert "teacher_runtime" in sd
    opt_b.load_state_dict(copy.deepcopy(sd))
    _train(a, opt_a, steps=3)
    _train(b, opt_b, steps=3)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name", ["dm", "rp", "rp_small", "rp_extra", "adam"])
def test_checkpoint_round_trip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(3)
    teacher = TEACHERS.get(name)()
    path = save_teacher(
        teacher, tmp_path / "sub" / f"{name}.pt", meta={"optimizee": "quadratic_cos", "seed": 0}
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["teacher"] == name and raw["meta"]["seed"] == 0
    loaded = load_teacher(path)
    assert type(loaded) is type(teacher) and loaded.kwargs == teacher.kwargs
    feats = torch.randn(9, teacher.feature_spec.num_features)
    out_a, _ = teacher(feats, teacher.init_state(9))
    out_b, _ = loaded(feats, loaded.init_state(9))
    assert torch.equal(out_a, out_b)


def test_checkpoint_with_kwargs(tmp_path: Path) -> None:
    teacher = TEACHERS.get("rp_extra")(hidden=7, extra=["m09", "mn05", "eta"], out_scale=0.1)
    loaded = load_teacher(save_teacher(teacher, tmp_path / "t.pt"))
    assert loaded.kwargs == teacher.kwargs and loaded.lstm.hidden == 7


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeacherCheckpointError, match="does not exist"):
        load_teacher(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(TeacherCheckpointError, match="not a teacher checkpoint"):
        load_teacher(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(TeacherCheckpointError, match="not a teacher checkpoint"):
        read_checkpoint(junk)
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "obj": Path("x")}, evil)  # needs pickle globals: refused by weights_only
    with pytest.raises(TeacherCheckpointError):
        read_checkpoint(evil)


def test_build_optimizer_teacher_family(tmp_path: Path) -> None:
    path = save_teacher(TEACHERS.get("sgd")(lr=0.1), tmp_path / "sgd.pt")
    ref, mine = _model(), _model()
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.05))
    opt, sched = build_optimizer(
        {"family": "teacher", "checkpoint": str(path), "lr": 0.5}, mine.parameters(), 10
    )
    assert sched is None
    _train(mine, opt)
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    opt2 = TeacherOptimizer.from_checkpoint(_model().parameters(), path)
    assert isinstance(opt2, TeacherOptimizer)


def test_a_teachers_cost_counts_its_feature_and_lstm_state() -> None:
    """The leaderboard's state_bytes_per_param: a teacher keeps its state outside opt.state (it read 0)."""
    from harness.stages.cost import state_bytes_per_param
    from teachers.rp import RP

    m = torch.nn.Linear(100, 10)
    params = list(m.parameters())
    teacher = RP()
    opt = TeacherOptimizer(params, teacher)
    assert state_bytes_per_param(opt, params) == 0  # nothing kept before the first step
    m(torch.randn(4, 100)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in params)
    lstm = sum(v.numel() * v.element_size() for v in opt._tstate.values())  # h and c of every layer
    assert lstm >= 2 * 20 * 4 * n  # at least one layer's h and c, float32, per coordinate
    assert state_bytes_per_param(opt, params) == opt.state_bytes() / n > lstm / n
