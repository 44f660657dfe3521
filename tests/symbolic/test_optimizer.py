"""SymbolicOptimizer: Adam equivalence, minimal state, lags, resume, schedules, and the functional step."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.features import FeatureSpec, FeatureState
from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.optim.optimizer import (
    SymbolicOptimizer,
    feature_spec_for,
    functional_step,
    init_functional_state,
)
from harness.training.optimizers import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g), torch.randn(32, 4, generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, sched=None) -> None:
    x, y = _data()
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_adam_equation_follows_torch_adam_with_two_groups() -> None:
    m1, m2 = _model(), _model()
    adam = torch.optim.Adam(
        [{"params": m1[0].parameters()}, {"params": m1[2].parameters(), "lr": 3e-3}], lr=1e-3, foreach=True
    )
    sym = SymbolicOptimizer(
        [{"params": m2[0].parameters()}, {"params": m2[2].parameters(), "lr": 3.0}],
        adam_equation(lr=1e-3),
        chunk_size=16,
    )  # small chunks: exercise chunking
    _train(m1, adam, 100)
    _train(m2, sym, 100)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert set(sym.state[m2[0].weight]) == {"step", "m", "v"}
    assert sym.state[m2[0].weight]["step"] == 100


def test_chunk_size_does_not_change_results() -> None:
    m1, m2 = _model(), _model()
    _train(m1, SymbolicOptimizer(m1.parameters(), eq6(L=3), chunk_size=5), 20)
    _train(m2, SymbolicOptimizer(m2.parameters(), eq6(L=3)), 20)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_state_holds_only_the_lags_the_equation_uses() -> None:
    p = nn.Parameter(torch.zeros(3, 2))
    opt = SymbolicOptimizer([p], Equation.parse("-0.01*g_0 - 0.001*g_3"))
    p.grad = torch.ones(3, 2)
    opt.step()
    st = opt.state[p]
    # lag 0 is the current gradient; lags 1..3 of g are kept in one ring, nothing else
    assert set(st) == {"step", "hist_g"} and st["hist_g"].shape == (3, 3, 2)
    assert opt.state_bytes() == 3 * 6 * 4

    q = nn.Parameter(torch.zeros(5))
    opt = SymbolicOptimizer([q], eq6(("m_hat", "g_hat"), L=2))
    q.grad = torch.ones(5)
    opt.step()
    # every lagged read sits in tanh(f/gamma): the rings keep tanh(m_hat), tanh(g_hat) (one tanh per step each)
    assert set(opt.state[q]) == {"step", "m", "v", "hist_tanh(m_hat)", "hist_tanh(g_hat)"}
    assert opt.state[q]["hist_tanh(m_hat)"].shape == (1, 5)

    r = nn.Parameter(torch.zeros(4))
    opt = SymbolicOptimizer([r], Equation.parse("-0.1*m09_0"))
    r.grad = torch.ones(4)
    opt.step()
    assert set(opt.state[r]) == {"step", "ema_0p9"}


def test_lags_and_features_match_harness_features() -> None:
    """Updates equal the equation evaluated on FeatureState's own lagged history (lag 0 newest, zeros before)."""
    text = "-0.01*m_hat_0 + 0.02*g_hat_2 - 0.03*m09_1 + 0.005*mn099_3 - 0.001*g_1"
    eq = Equation.parse(
        text, provenance={"feature_spec": FeatureSpec(("m_hat",), beta1=0.8, beta2=0.99).to_dict()}
    )
    spec = feature_spec_for(eq)
    assert (spec.beta1, spec.beta2) == (0.8, 0.99)
    ref = FeatureState(spec.with_lags(4), 7)
    p = nn.Parameter(torch.zeros(7))
    opt = SymbolicOptimizer([p], eq)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        grad = torch.randn(7, generator=g)
        ref.update(grad)
        hist = ref.lagged().double().numpy()  # [n, F, T]
        cols = {f"{f}_{lag}": hist[:, j, lag] for j, f in enumerate(spec.names) for lag in range(4)}
        before = p.detach().clone()
        p.grad = grad
        opt.step()
        np.testing.assert_allclose(
            (p.detach() - before).double().numpy(), eq.evaluate(cols), rtol=2e-4, atol=1e-8
        )


def test_state_dict_round_trip_resumes_bit_exactly() -> None:
    eq = eq6(("m_hat", "g_hat", "g"), L=3, gamma=0.7)
    full = _model()
    opt = SymbolicOptimizer(full.parameters(), eq)
    _train(full, opt, 20)

    first = _model()
    opt1 = SymbolicOptimizer(first.parameters(), eq)
    _train(first, opt1, 10)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = _model(seed=5)
    resumed.load_state_dict(ckpt["model"])
    opt2 = SymbolicOptimizer(resumed.parameters(), Equation.from_json(json.dumps(eq.to_json())))
    opt2.load_state_dict(ckpt["opt"])
    _train(resumed, opt2, 10)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)

    other = SymbolicOptimizer(_model().parameters(), adam_equation())
    with pytest.raises(ValueError, match="saved for equation"):
        other.load_state_dict(copy.deepcopy(opt1.state_dict()))


def test_cosine_lambda_lr_through_the_factory(tmp_path) -> None:
    path = Equation.parse("-0.1*g_0").save(tmp_path / "sgd.json")
    p = nn.Parameter(torch.zeros(3))
    opt, sched = build_optimizer(
        {"family": "symbolic", "equation": str(path), "lr_mult": 0.5, "cosine": True}, [p], total_steps=4
    )
    assert isinstance(opt, SymbolicOptimizer) and sched is not None
    for k in range(4):
        lr = 0.5 * 0.5 * (1 + math.cos(math.pi * k / 4))
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
        before = p.detach().clone()
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
        torch.testing.assert_close(p.detach() - before, torch.full((3,), -0.1 * lr))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_from_file_refuses_a_front_and_skips_params_without_grad(tmp_path) -> None:
    eq = adam_equation()
    front = ParetoFront([eq]).save(tmp_path / "front.json")
    with pytest.raises(ValueError, match="Pareto front"):
        SymbolicOptimizer.from_file([nn.Parameter(torch.zeros(2))], front)
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = SymbolicOptimizer.from_file([a, b], eq.save(tmp_path / "adam.json"), lr_mult=2.0)
    assert opt.param_groups[0]["lr"] == 2.0
    a.grad = torch.ones(2)
    loss = opt.step(lambda: torch.tensor(3.0))
    assert float(loss) == 3.0 and b not in opt.state
    torch.testing.assert_close(a.detach(), torch.full((2,), 1 - 2e-3))


def test_non_contiguous_parameter() -> None:
    base = torch.randn(4, 3)
    p1 = nn.Parameter(base.clone().t())  # non-contiguous
    p2 = nn.Parameter(base.clone().t().contiguous())
    assert not p1.is_contiguous()
    o1, o2 = SymbolicOptimizer([p1], eq6(L=2)), SymbolicOptimizer([p2], eq6(L=2))
    for k in range(3):
        g = torch.randn(3, 4, generator=torch.Generator().manual_seed(k))
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(p1.detach(), p2.detach())


def test_functional_step_equals_stateful_step_and_is_differentiable() -> None:
    eq = eq6(("m_hat", "g_hat"), L=3, gamma=0.5)
    m = _model()
    params = {k: v.detach().clone() for k, v in m.named_parameters()}
    opt = SymbolicOptimizer(m.parameters(), eq, lr=0.7)
    module = eq.compile()
    state = init_functional_state(module, params)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
        for k, p in m.named_parameters():
            p.grad = grads[k].clone()
        opt.step()
        params, state = functional_step(module, params, grads, state, lr=0.7)
    for k, p in m.named_parameters():
        torch.testing.assert_close(params[k], p.detach(), rtol=1e-6, atol=1e-7)
        assert int(state[k]["t"]) == 12

    # gradients reach every constant through one step
    grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    new, _ = functional_step(module, params, grads, state)
    sum(v.sum() for v in new.values()).backward()
    assert all(c.grad is not None and torch.isfinite(c.grad) for c in module.constants)
    # substituted constants are used instead of the module's
    tie = set(eq.provenance["tie_groups"][0])  # gamma kept, every W set to 0: a zero update
    consts = [torch.tensor(v if i in tie else 0.0) for i, v in enumerate(eq.constants)]
    same, _ = functional_step(module, params, grads, state, constants=consts)
    for k in params:
        torch.testing.assert_close(same[k], params[k])


@pytest.mark.parametrize(
    "text",
    [
        "g_2",
        "g_0 + g_3",
        "-0.5*g_1*m09_0 + 0.1*m09_2",
        # rings of h(feature): tanh(g), exp(-g) (an unseen lag is exp(-0) = 1, not 0), tanh(2*m09) read at
        # lag 0 in another context too
        "-0.01*tanh(g_0) - 0.02*tanh(g_1) + 0.03*tanh(g_3)",
        "0.1*exp(-g_1) - 0.2*exp(-g_2) - 0.01*g_0",
        "-0.1*tanh(2.0*m09_1) + 0.05*tanh(2.0*m09_2) - 0.01*m09_0*g_0",
    ],
)
def test_stateful_and_functional_steps_agree_on_lagged_rules(text: str) -> None:
    """The same FeatureSpec arithmetic and equation in both drivers; a bare lagged variable reads its lag, not
    the new value; a ring of ``h(feature)`` starts at ``h(0)``."""
    eq = Equation.parse(text)
    p = torch.nn.Parameter(torch.zeros(7))
    opt = SymbolicOptimizer([p], eq, chunk_size=3)
    module = eq.compile()
    params = {"p": torch.zeros(7)}
    state = init_functional_state(module, params)
    grads = [torch.randn(7, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        params, state = functional_step(module, params, {"p": gr}, state)
        torch.testing.assert_close(p.detach(), params["p"], rtol=1e-6, atol=1e-7)
    if text == "g_2":  # p = g_1 + g_2 + g_3 + g_4 (the gradients two steps back)
        torch.testing.assert_close(p.detach(), sum(grads[:4], torch.zeros(7)))
