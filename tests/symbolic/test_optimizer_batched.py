"""SymbolicOptimizer's batched path (small tensors stepped as flat buckets) against its per-tensor path."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import SymbolicOptimizer, functional_step, init_functional_state

RULES = {
    "adam": lambda: adam_equation(lr=1e-3),
    "eq6_L3": lambda: eq6(("m_hat", "g_hat"), L=3, gamma=0.7),
    "lagged": lambda: Equation.parse("-0.01*tanh(g_1*m09_0) + 0.001*m09_2 - 0.001*mn099_1 - 0.001*g_0"),
    "bare_lag": lambda: Equation.parse("-0.01*g_2"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Mixed(nn.Module):
    """Tensors from 0-dim to a few thousand elements, one of them non-contiguous."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.big = nn.Linear(40, 50)  # 2000 weights: above the test's batch_numel
        self.mid = nn.Linear(50, 20)
        self.small = nn.Linear(20, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.t = nn.Parameter(torch.randn(5, 7).t())  # non-contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.big.weight.dtype)
        h = torch.tanh(self.mid(torch.tanh(self.big(x))))
        out = self.scale * self.small(h.to(self.small.weight.dtype)).to(x.dtype)
        return out + (x[:, :7] @ self.t).sum(-1, keepdim=True)


def _grads(model: nn.Module, k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x, y = torch.randn(16, 40, generator=g), torch.randn(16, 3, generator=g)
    model.zero_grad(set_to_none=True)
    ((model(x) - y) ** 2).mean().backward()


def _opt(model: nn.Module, rule: str, batched: bool, **kw) -> SymbolicOptimizer:
    params = list(model.parameters())
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.5}]
    return SymbolicOptimizer(groups, RULES[rule](), batch_numel=1000 if batched else 0, **kw)


def _run(model: nn.Module, opt: SymbolicOptimizer, steps: range) -> None:
    for k in steps:
        _grads(model, k)
        opt.step()


def _assert_same(a: nn.Module, b: nn.Module, exact: bool = False) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if exact:
            assert torch.equal(p, q), name
        else:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("chunk_size", [1 << 18, 7])
def test_batched_equals_per_tensor(rule: str, chunk_size: int, assert_same_state) -> None:
    ref, bat = Mixed(), Mixed()
    o_ref, o_bat = _opt(ref, rule, False), _opt(bat, rule, True, chunk_size=chunk_size)
    for k in range(12):
        _grads(ref, k)
        _grads(bat, k)
        o_ref.step()
        o_bat.step()
        _assert_same(ref, bat)
    assert o_bat._buckets, "the batched path was not taken"
    # the same state, keyed and shaped per parameter as on the per-tensor path
    assert_same_state(o_ref, o_bat, ref.parameters(), bat.parameters(), steps=12, rtol=1e-6)
    assert o_ref.state_bytes() == o_bat.state_bytes()


@pytest.mark.parametrize("rule", ["adam", "eq6_L3", "lagged"])
def test_state_dict_round_trip_batched(rule: str) -> None:
    full = Mixed()
    _run(full, _opt(full, rule, True), range(16))

    first = Mixed()
    o1 = _opt(first, rule, True)
    _run(first, o1, range(8))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = Mixed(seed=3)
    resumed.load_state_dict(ckpt["model"])
    o2 = _opt(resumed, rule, True)
    o2.load_state_dict(ckpt["opt"])
    _run(resumed, o2, range(8, 16))
    _assert_same(full, resumed, exact=True)

    # a batched optimizer's state resumes a per-tensor one, and the other way round
    for src_batched in (True, False):
        a = Mixed()
        oa = _opt(a, rule, src_batched)
        _run(a, oa, range(8))
        b = Mixed(seed=4)
        b.load_state_dict(a.state_dict())
        ob = _opt(b, rule, not src_batched)
        ob.load_state_dict(oa.state_dict())
        _run(b, ob, range(8, 16))
        _assert_same(full, b)


def test_parameters_without_gradients_some_steps() -> None:
    """Step counts diverge (one bucket per count, a lone parameter on the per-tensor path): still exact."""
    ref, bat = Mixed(), Mixed()
    o_ref, o_bat = _opt(ref, "eq6_L3", False), _opt(bat, "eq6_L3", True)
    for k in range(10):
        for m, o in ((ref, o_ref), (bat, o_bat)):
            _grads(m, k)
            if k % 3 == 1:
                m.mid.bias.grad = None
                m.mid.weight.grad = None
            if k % 4 == 2:
                m.scale.grad = None
            o.step()
        _assert_same(ref, bat)
    assert o_bat.state[bat.mid.bias]["step"] == o_ref.state[ref.mid.bias]["step"] == 7


def test_mixed_dtypes_and_state_edited_by_hand() -> None:
    a, b = Mixed().double(), Mixed().double()
    a.small.float()
    b.small.float()
    oa, ob = _opt(a, "adam", False), _opt(b, "adam", True)
    _run(a, oa, range(5))
    _run(b, ob, range(5))
    _assert_same(a, b)
    assert b.small.weight.dtype == torch.float32 and ob.state[b.small.weight]["m"].dtype == torch.float32
    # state replaced by hand is picked up by the next step (the bucket is rebuilt around it)
    for m, o in ((a, oa), (b, ob)):
        o.state[m.mid.weight]["m"] = torch.zeros_like(m.mid.weight)
        o.state[m.scale]["v"].mul_(2.0)
    _run(a, oa, range(5, 8))
    _run(b, ob, range(5, 8))
    _assert_same(a, b)


def test_batch_numel_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="batch_numel"):
        SymbolicOptimizer([nn.Parameter(torch.zeros(2))], adam_equation(), batch_numel=-1)


@pytest.mark.parametrize("text", ["exp(-2.0)*g_0", "-0.1*g_0/(1.0 - 1.0)", "m09_1*tanh(0.5) - 0.01*g_hat_0"])
def test_constant_only_subtrees_match_the_functional_step(text: str) -> None:
    """The stateful step evaluates constants as floats where it can; bare-constant functions and a division
    by zero fall back to tensor constants, so both drivers still agree (inf included)."""
    eq = Equation.parse(text)
    ps = [nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2, 2))]
    opt = SymbolicOptimizer(ps, eq)
    module = eq.compile()
    params = {"a": torch.ones(3), "b": torch.ones(2, 2)}
    state = init_functional_state(module, params)
    for k in range(4):
        g = torch.Generator().manual_seed(k)
        grads = {"a": torch.randn(3, generator=g), "b": torch.randn(2, 2, generator=g)}
        ps[0].grad, ps[1].grad = grads["a"].clone(), grads["b"].clone()
        opt.step()
        with torch.no_grad():
            params, state = functional_step(module, params, grads, state)
        for p, name in zip(ps, "ab", strict=True):
            torch.testing.assert_close(p.detach(), params[name], rtol=1e-6, atol=1e-6, equal_nan=True)
