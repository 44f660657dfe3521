"""The stateful step's eager fast paths (:mod:`harness.symbolic.optim.eager`): numpy's tanh and linear programs,
against the generic in-place program with ``torch.tanh`` (the path before them), on many small tensors and a
few big ones."""

from __future__ import annotations

import pytest
import sympy
import torch

from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.lang import Equation
from harness.symbolic.lang.torch_ops import FUSED_TORCH_OPS, TORCH_OPS
from harness.symbolic.optim.eager import EAGER_OPS, cpu_tanh, into_form, linear_form, tanh_into
from harness.symbolic.optim.optimizer import SymbolicOptimizer
from harness.symbolic.optim.step import StepProgram

pytestmark = pytest.mark.usefixtures("one_thread")

RULES = {
    "eq6_L2": lambda: eq6(("m_hat", "g_hat"), L=2),
    "eq6_L3_gamma": lambda: eq6(("m_hat", "g_hat"), L=3, gamma=0.7),
    "eq6_eta_L2": lambda: eq6(("m_hat", "g_hat", "eta"), L=2, W=[[1e-3, -2e-4], [5e-4, 1e-4], [3e-4, 2e-4]]),
    "eq6_g_m09_L4": lambda: eq6(("g", "m09"), L=4, gamma=0.05),
    "raw_linear": lambda: Equation.parse("0.01*g_2 - 0.002*m09_1 + 0.001*g_0 - 0.003*m_hat_0 + 0.0005"),
    "h_and_bare": lambda: Equation.parse("-0.01*tanh(g_1/0.5) - 0.01*tanh(g_0/0.5) + 0.001*g_0"),
    # g_3 bare: the ring keeps g itself, so tanh(g_1/0.5) stays in the equation (not linear)
    "raw_ring_tanh": lambda: Equation.parse("-0.01*tanh(g_1/0.5) - 0.01*tanh(g_0/0.5) - 0.002*g_3"),
    "exp_ring": lambda: Equation.parse("-0.001*exp(-m_hat_1) + 0.001*exp(-m_hat_0)"),
    "nonlinear": lambda: Equation.parse("-0.01*tanh(g_1*m09_0) + 0.001*m09_2 - 0.001*mn099_1 - 0.001*g_0"),
    "adam": lambda: adam_equation(lr=1e-3),
}


def _params(seed: int = 0) -> list[torch.Tensor]:
    """31 small tensors (0-dim to a few hundred elements, one non-contiguous) and two big ones (one over two
    chunks, one non-contiguous)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [int(s) for s in torch.randint(1, 400, (30,), generator=g)]
    ps = [torch.randn(s, generator=g) for s in sizes]
    ps.append(torch.randn(6, 9, generator=g).t())
    ps.append(torch.randn(300_000, generator=g))
    ps.append(torch.randn(400, 300, generator=g).t())
    ps.append(torch.tensor(0.5))
    return [p.requires_grad_() for p in ps]


def _reference(opt: SymbolicOptimizer) -> SymbolicOptimizer:
    """``opt`` on the path before the fast ones: the generic program with ``torch.tanh``."""
    opt._programs[torch.float32] = StepProgram.build(opt.equation, opt.plan, torch.float32, TORCH_OPS)
    return opt


def _run(rule: str, reference: bool, steps: int = 7, **kw) -> tuple[list[torch.Tensor], SymbolicOptimizer]:
    ps = _params()
    opt = SymbolicOptimizer(ps, RULES[rule](), chunk_size=1 << 17, batch_numel=1000, **kw)
    if reference:
        _reference(opt)
    g = torch.Generator().manual_seed(1)
    for k in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g) * (0.1 if k % 2 else 1.0)
            if k == 3 and p.dim():
                p.grad[..., :1] = 0.0  # zero gradients: features at 0
        opt.step()
    return ps, opt


@pytest.mark.parametrize("rule", sorted(RULES))
def test_fast_paths_match_the_generic_program(rule: str, assert_same_state) -> None:
    fast, o_fast = _run(rule, reference=False)
    ref, o_ref = _run(rule, reference=True)
    program = o_fast._program(torch.float32)
    assert (program.linear is not None) == (rule not in ("nonlinear", "adam", "raw_ring_tanh"))
    assert o_ref._program(torch.float32).linear is None
    for i, (p, q) in enumerate(zip(fast, ref, strict=True)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"param {i}")
    assert_same_state(o_fast, o_ref, fast, ref, steps=7)


def test_linear_path_with_lags_not_seen_yet_and_one_chunk_per_element() -> None:
    """Fewer steps than lags (rows still at ``h(0)``) and chunks of 7 elements."""
    ps_a, ps_b = _params(3), _params(3)
    o_a = SymbolicOptimizer(ps_a, RULES["eq6_g_m09_L4"](), chunk_size=7, batch_numel=0)
    o_b = _reference(SymbolicOptimizer(ps_b, RULES["eq6_g_m09_L4"](), chunk_size=1 << 18, batch_numel=0))
    for k in range(3):
        for a, b in zip(ps_a, ps_b, strict=True):
            a.grad = torch.full_like(a, 0.3 * (k + 1)) - a.detach()
            b.grad = a.grad.clone()
        o_a.step()
        o_b.step()
        for a, b in zip(ps_a, ps_b, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_eq6_program_is_linear_with_tanh_written_into_the_rings() -> None:
    eq = eq6(("m_hat", "g_hat"), L=3, gamma=0.7)
    opt = SymbolicOptimizer([torch.zeros(3, requires_grad=True)], eq)
    program = opt._program(torch.float32)
    assert program.linear is not None and len(program.linear.terms) == 6 and program.linear.const == 0.0
    assert sorted(r.key for r in program.rings) == ["hist_tanh(g_hat/0.7)", "hist_tanh(m_hat/0.7)"]
    for r in program.rings:
        assert r.into is not None
        c, fn = r.into
        assert fn is tanh_into and c == pytest.approx(1 / 0.7)


def test_linear_and_into_forms() -> None:
    x, y, c = sympy.symbols("x y c", real=True)
    consts = [torch.tensor(2.0)]
    form = linear_form(3 * x - c * y + 1, {c: 0}, consts)
    assert form is not None and dict((n, v) for v, n in form.terms) == {"x": 3.0, "y": -2.0}
    assert form.const == 1.0
    assert linear_form(x * y, {c: 0}, consts) is None
    assert linear_form(sympy.tanh(x) + y, {c: 0}, consts) is None
    assert linear_form(c + 1, {c: 0}, consts) is None  # no variable
    assert into_form(sympy.tanh(x / c), x, {c: 0}, consts) == (0.5, tanh_into)
    assert into_form(sympy.tanh(x), x, {c: 0}, consts) == (1.0, tanh_into)
    assert into_form(sympy.tanh(x * x), x, {c: 0}, consts) is None
    assert into_form(sympy.erfc(x), x, {c: 0}, consts) is None  # no out= form: evaluated and copied


def _ulps(y: torch.Tensor, x: torch.Tensor) -> float:
    ref = torch.tanh(x.double())
    spacing = (
        torch.nextafter(ref.to(y.dtype).abs(), torch.tensor(float("inf"), dtype=y.dtype)).double()
        - ref.to(y.dtype).abs().double()
    )
    finite = ref.isfinite()
    return float(((y.double() - ref).abs() / spacing)[finite].max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_tanh_is_tanh(dtype: torch.dtype) -> None:
    x = torch.cat(
        [
            torch.linspace(-12, 12, 200_001, dtype=dtype),
            torch.logspace(-30, 1.5, 20_000, dtype=dtype),
            -torch.logspace(-30, 1.5, 20_000, dtype=dtype),
        ]
    )
    y = cpu_tanh(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert _ulps(y, x) <= 2.0
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 50.0, -50.0, 1e-40], dtype=dtype)
    torch.testing.assert_close(cpu_tanh(special), torch.tanh(special), rtol=0, atol=0)
    assert torch.signbit(cpu_tanh(special))[1]
    assert cpu_tanh(torch.tensor([float("nan")], dtype=dtype)).isnan().all()
    strided = torch.randn(40, 30, dtype=dtype).t()
    torch.testing.assert_close(cpu_tanh(strided), torch.tanh(strided))
    buf = strided.clone()
    tanh_into(buf, buf)  # in place
    torch.testing.assert_close(buf, torch.tanh(strided))


def test_cpu_tanh_falls_back_to_torch() -> None:
    x = torch.randn(10, dtype=torch.float16)
    assert torch.equal(cpu_tanh(x), torch.tanh(x))
    w = torch.randn(10, requires_grad=True)
    cpu_tanh(w).sum().backward()  # differentiable where it must be: torch.tanh
    assert w.grad is not None
    assert EAGER_OPS[sympy.tanh] is cpu_tanh


def test_programs_for_other_ops_keep_the_generic_path() -> None:
    """The compiled step builds its programs with its own ops: no linear form, no ``into`` (no numpy)."""
    eq = eq6(("m_hat", "g_hat"), L=2)
    opt = SymbolicOptimizer([torch.zeros(3, requires_grad=True)], eq)
    for ops in (TORCH_OPS, FUSED_TORCH_OPS):
        program = StepProgram.build(eq, opt.plan, torch.float32, ops)
        assert program.linear is None and all(r.into is None for r in program.rings)
