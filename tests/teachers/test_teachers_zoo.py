"""Every registered teacher: shapes, finiteness, state, coordinate-wise weights, determinism."""

from __future__ import annotations

import pytest
import torch

import teachers  # noqa: F401 - registers the built-ins
from harness.registry import TEACHERS
from teachers.base import Teacher

BUILTINS = {"dm", "rp", "rp_small", "rp_extra", "sgd", "momentum", "adam"}


def _run(teacher: Teacher, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[dict]]:
    n = grads[0].numel()
    fs = teacher.new_feature_state(n)
    state = teacher.init_state(n)
    outs, states = [], [state]
    for g in grads:
        out, state = teacher(fs.update(g), state)
        outs.append(out)
        states.append(state)
    return outs, states


def test_builtins_registered() -> None:
    assert BUILTINS <= set(TEACHERS.names())


@pytest.mark.parametrize("name", TEACHERS.names())
def test_every_teacher_smoke(name: str) -> None:
    torch.manual_seed(0)
    teacher = TEACHERS.get(name)()
    assert isinstance(teacher, Teacher)
    assert teacher.name == name
    assert teacher.feature_spec.num_features >= 1
    n = 13
    grads = [torch.randn(n) * 10.0 ** (k - 2) for k in range(4)]
    outs, states = _run(teacher, grads)
    for out in outs:
        assert out.shape == (n,)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert set(states[0]) == set(states[-1]), "state keys must be stable across steps"
    for key, value in states[0].items():
        assert states[-1][key].shape == value.shape
        if value.dim() > 0:
            assert value.shape[0] == n, f"state {key} is not per-coordinate"
    if states[0]:
        assert any(not torch.equal(states[0][k], states[-1][k]) for k in states[0]), "state did not advance"
    # kwargs are plain values and rebuild an identical module
    rebuilt = TEACHERS.get(name)(**teacher.kwargs)
    rebuilt.load_state_dict(teacher.state_dict())
    outs2, _ = _run(rebuilt, grads)
    for a, b in zip(outs, outs2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", TEACHERS.names())
def test_coordinatewise_and_batched(name: str) -> None:
    """Outputs of a coordinate never depend on the other coordinates (shared weights, one batch)."""
    torch.manual_seed(1)
    teacher = TEACHERS.get(name)()
    grads = [torch.randn(10) for _ in range(3)]
    full, _ = _run(teacher, grads)
    idx = torch.tensor([2, 7])
    part, _ = _run(teacher, [g[idx] for g in grads])
    torch.testing.assert_close(full[-1][idx], part[-1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["dm", "rp", "rp_small", "rp_extra"])
def test_learned_teachers_deterministic_under_seed(name: str) -> None:
    torch.manual_seed(123)
    a = TEACHERS.get(name)()
    torch.manual_seed(123)
    b = TEACHERS.get(name)()
    assert a.learnable
    grads = [torch.randn(6) for _ in range(3)]
    for x, y in zip(_run(a, grads)[0], _run(b, grads)[0], strict=True):
        assert torch.equal(x, y)


def test_sizes_configurable() -> None:
    rp = TEACHERS.get("rp")(hidden=8, layers=3, proj=5, out_scale=0.1)
    assert rp.proj.out_features == 5 and len(rp.lstm.cells) == 3 and rp.lstm.hidden == 8
    small = TEACHERS.get("rp_small")()
    assert small.proj.out_features == 6 and len(small.lstm.cells) == 1
    extra = TEACHERS.get("rp_extra")(extra=["m09", "mn099"])
    assert extra.feature_spec.names == ("m_hat", "g_hat", "m09", "mn099")
    default_extra = TEACHERS.get("rp_extra")()
    assert default_extra.eta is not None and "g" in default_extra.feature_spec.names
    dm = TEACHERS.get("dm")(preprocess=False, hidden=4, layers=1)
    assert dm.lstm.cells[0].input_size == 1
    with pytest.raises(ValueError):
        TEACHERS.get("rp")(extra=["bogus"])


def test_rp_output_bounded_by_out_scale() -> None:
    """``update = out_scale * tanh(pre)``: with the output layer scaled so every pre-activation is
    >= 10 in magnitude (un-squashed that would be a step of >= 10 * out_scale), the step stays within
    ``out_scale`` and saturates at ``+out_scale`` / ``-out_scale`` (sign of the pre-activation)."""
    torch.manual_seed(0)
    out_scale = 0.05
    teacher = TEACHERS.get("rp")(out_scale=out_scale)
    grads = [torch.randn(100) * 10.0 ** (k - 1) for k in range(4)]  # 0.1 .. 1e2 scale, then 1e3 below
    grads.append(torch.randn(100) * 1e3)
    pre: list[torch.Tensor] = []
    teacher.out.register_forward_hook(lambda _m, _a, out: pre.append(out.detach().squeeze(-1)))
    outs, _ = _run(teacher, grads)
    # default init: the step is exactly out_scale * tanh(pre-activation)
    for u, p in zip(outs, pre, strict=True):
        torch.testing.assert_close(u, out_scale * torch.tanh(p))
    smallest = min(float(p.abs().min()) for p in pre)
    assert smallest > 0
    # the output layer is not fed back into the LSTM, so scaling its weights scales the pre-activation
    w0 = teacher.out.weight.detach().clone()
    bound = torch.tensor(out_scale)  # out_scale as the float32 the step is computed in
    saturated: list[torch.Tensor] = []
    for sign in (1.0, -1.0):
        pre.clear()
        with torch.no_grad():
            teacher.out.weight.copy_(w0 * (sign * 20.0 / smallest))
        outs, _ = _run(teacher, grads)
        assert len(pre) == len(outs)
        for u, p in zip(outs, pre, strict=True):
            assert float(p.abs().min()) >= 10.0  # un-squashed: every |step| >= 10 * out_scale
            assert bool((u.abs() <= bound).all())  # the bound holds ...
            # ... and is reached: every step saturates at +-out_scale
            torch.testing.assert_close(u, out_scale * torch.sign(p), rtol=0.0, atol=1e-6)
        saturated.extend(outs)
    both = torch.cat(saturated).detach()
    assert float(both.max()) == pytest.approx(out_scale, abs=1e-6)
    assert float(both.min()) == pytest.approx(-out_scale, abs=1e-6)


def test_eta_feature_gets_gradients() -> None:
    teacher = TEACHERS.get("rp_extra")()
    outs, _ = _run(teacher, [torch.randn(20) for _ in range(3)])
    outs[-1].sum().backward()
    assert teacher.eta is not None
    for p in (teacher.eta.k, teacher.eta.l, teacher.eta.a_raw):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
