"""SymbolicOptimizer's stateful program (rings of ``h(feature)``, the folded in-place evaluator) and its opt-in
compiled step (``compile=True``: one ``torch.compile``-d kernel per parameter above ``batch_numel``).

The compiled tests opt in to the compilation cost (a few seconds each); nothing else in the suite compiles.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import harness.symbolic.optim.step as step_module
from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.lang import Equation
from harness.symbolic.optim.optimizer import EquationPlan, StepProgram, SymbolicOptimizer

RULES = {
    "adam": lambda: adam_equation(lr=1e-3),
    # m_hat, g_hat and eta (6 parameters), two lags each: rings of tanh(f/0.7)
    "eq6_eta_L3": lambda: eq6(
        ("m_hat", "g_hat", "eta"), L=3, gamma=0.7, eta_params=(0.6, 0.4, 0.1, 0.5, 0.5, 0.2)
    ),
    # rings of the features themselves (reads in several contexts), an mn feature, a bare lag
    "lagged": lambda: Equation.parse("-0.01*tanh(g_1*m09_0) + 0.001*m09_2 - 0.001*mn099_1 - 0.001*g_2"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Mixed(nn.Module):
    """Tensors from 0-dim to a few hundred elements, one of them non-contiguous."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(12, 9)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.t = nn.Parameter(torch.randn(5, 12).t())  # non-contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.a(x)).sum(-1) + (x @ self.t).sum(-1)


def _grads(model: nn.Module, k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x, y = torch.randn(16, 12, generator=g), torch.randn(16, generator=g)
    model.zero_grad(set_to_none=True)
    ((model(x) - y) ** 2).mean().backward()


def _run(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for k in steps:
        _grads(model, k)
        opt.step()


def test_eq6_rings_keep_tanh_of_the_features_and_the_evaluator_folds_constants() -> None:
    eq = eq6(("m_hat", "g_hat"), L=3, gamma=0.7)
    prog = StepProgram.build(eq, EquationPlan.from_equation(eq), torch.float32)
    assert [r.key for r in prog.rings] == ["hist_tanh(g_hat/0.7)", "hist_tanh(m_hat/0.7)"]
    assert all(r.sym0 is not None and r.fill == 0.0 for r in prog.rings)  # lag 0's tanh is reused
    assert prog.lag0 == ()  # the equation reads no raw feature any more
    # untied gammas: lag 1 and lag 2 sit in different tanh, so the ring keeps the feature
    w = eq6(("m_hat",), L=3).with_constants([1.0, 1.0, 0.5, 1.0, 0.5, 2.0, 1.0, 0.5, 3.0])
    prog = StepProgram.build(w, EquationPlan.from_equation(w), torch.float32)
    assert [r.key for r in prog.rings] == ["hist_m_hat"] and prog.lag0 == ((0, "m_hat_0"),)
    # lag 0's gamma alone differs: the ring keeps tanh(m_hat/2), lag 0 is evaluated apart
    w = eq6(("m_hat",), L=3).with_constants([1.0, 1.0, 0.5, 1.0, 0.5, 2.0, 1.0, 0.5, 2.0])
    prog = StepProgram.build(w, EquationPlan.from_equation(w), torch.float32)
    assert [(r.key, r.sym0) for r in prog.rings] == [("hist_tanh(m_hat/2)", None)]


def test_an_old_checkpoint_with_raw_rings_is_converted_on_load(monkeypatch) -> None:
    """A state saved with ``hist_<feature>`` (the feature's values) resumes exactly where this version keeps
    ``hist_tanh(...)``: the ring is mapped through h on load."""
    eq = eq6(("m_hat", "g_hat"), L=3, gamma=0.7)
    full = Mixed()
    _run(full, SymbolicOptimizer(full.parameters(), eq, batch_numel=0), range(12))

    with monkeypatch.context() as m:  # the old layout: no ring transform
        m.setattr(step_module, "_ring_transform", lambda *a, **k: None)
        first = Mixed()
        o1 = SymbolicOptimizer(first.parameters(), eq, batch_numel=0)
        _run(first, o1, range(6))
        assert "hist_m_hat" in o1.state[first.a.weight]
        buf = io.BytesIO()
        torch.save({"model": first.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = Mixed(seed=3)
    resumed.load_state_dict(ckpt["model"])
    o2 = SymbolicOptimizer(resumed.parameters(), eq, batch_numel=0)
    o2.load_state_dict(ckpt["opt"])
    assert set(o2.state[resumed.a.weight]) == {
        "step",
        "m",
        "v",
        "hist_tanh(m_hat/0.7)",
        "hist_tanh(g_hat/0.7)",
    }
    _run(resumed, o2, range(6, 12))
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_compiled_step_equals_the_eager_step(rule: str, assert_same_state) -> None:
    ref, comp = Mixed(), Mixed()
    o_ref = SymbolicOptimizer(ref.parameters(), RULES[rule](), lr=0.5, batch_numel=0)
    o_comp = SymbolicOptimizer(comp.parameters(), RULES[rule](), lr=0.5, batch_numel=0, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback: the compiled kernel ran
        for k in range(8):
            _grads(ref, k)
            _grads(comp, k)
            o_ref.step()
            o_comp.step()
            for g in (o_ref.param_groups[0], o_comp.param_groups[0]):
                g["lr"] = 0.5 / (k + 2)  # a schedule: lr changes every step without a recompile
    assert o_comp.compile and o_comp.compile_seconds > 0
    for (name, p), q in zip(ref.named_parameters(), comp.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=name)
    assert_same_state(o_comp, o_ref, comp.parameters(), ref.parameters(), steps=8)


def test_compiled_step_follows_torch_adam() -> None:
    torch.manual_seed(0)
    m1 = nn.Linear(30, 40)
    m2 = nn.Linear(30, 40)
    m2.load_state_dict(m1.state_dict())
    adam = torch.optim.Adam(m1.parameters(), lr=1e-3, foreach=True)
    sym = SymbolicOptimizer(m2.parameters(), adam_equation(lr=1e-3), batch_numel=100, compile=True)
    x, y = torch.randn(32, 30), torch.randn(32, 40)
    for m, opt in ((m1, adam), (m2, sym)):
        for _ in range(30):
            opt.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            opt.step()
    assert sym.compile_seconds > 0  # the weight (1200 > 100) went through the kernel, the bias did not
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_failing_compilation_falls_back_to_the_eager_step(monkeypatch) -> None:
    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    ref, comp = Mixed(), Mixed()
    o_ref = SymbolicOptimizer(ref.parameters(), RULES["lagged"](), batch_numel=0)
    o_comp = SymbolicOptimizer(comp.parameters(), RULES["lagged"](), batch_numel=0, compile=True)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here"):
        _run(comp, o_comp, range(4))
    _run(ref, o_ref, range(4))
    assert not o_comp.compile and o_comp.compile_seconds == 0.0
    for p, q in zip(ref.parameters(), comp.parameters(), strict=True):
        assert torch.equal(p, q)
