"""PyTorch's own optimizer contract, for ``torch.optim.Adam`` (the reference) and ``SymbolicOptimizer``.

The generic checks of torch's optimizer suite (``TestOptimRenewed`` in pytorch's ``test/test_optim.py``, with
``torch/testing/_internal/common_optimizers.py``) that apply to any ``torch.optim.Optimizer``, ported as plain
pytest checks and parametrised over Adam and over SymbolicOptimizer with four rule shapes and its paths:

* rules: Adam's form (``-lr*m_hat_0``), eq. 6 with lags (rings of ``tanh(f/gamma)``), a rule over ``eta``
  (eq. 6 over ``eta`` and ``m_hat``) and a rule with a carried schedule (bias-corrected momenta ``m09``,
  ``mn099``: their ``1 - beta**t`` corrections follow the step count carried in the state, and raw lag rings);
* paths: batched small tensors (flat buckets), per-tensor chunks (``batch_numel=0``), and ``compile=True``
  (one ``torch.compile``-d kernel per tensor; Adam's form here, every rule in ``test_optimizer_compiled.py``);
  every scheduler runs on each rule's batched path and on Adam's form's other paths.

A check that SymbolicOptimizer refuses by design asserts the error and that nothing changed. Notes on each
point: ``docs/symbolic.md`` ("Contract with torch.optim").
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.optim.lr_scheduler as lrs
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.lang import Equation
from harness.symbolic.optim import SymbolicOptimizer

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # eta's parameters reach dynamo through a functools.lru_cache (constant values): dynamo says so once
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`"),
]

RULES: dict[str, Callable[[], Equation]] = {
    "adam_form": lambda: adam_equation(lr=1e-2),
    "eq6_lags": lambda: eq6(("m_hat", "g_hat"), L=3, gamma=0.7, lr=1e-2),
    "eta": lambda: eq6(("eta", "m_hat"), L=2, lr=1e-2, eta_params=(0.6, 0.4, 0.1, 0.5, 0.5, 0.2)),
    "schedule": lambda: Equation.parse("-0.01*tanh(g_1*m09_0) - 0.01*m09_2 - 0.01*mn099_1 - 0.002*g_2"),
}
PATHS: dict[str, dict[str, Any]] = {
    "batched": {},
    "per_tensor": {"batch_numel": 0, "chunk_size": 7},  # small chunks: every parameter in several
    "compiled": {"batch_numel": 0, "compile": True},
}
COMPILED_RULES = ("adam_form",)  # compile=True for more rules: test_optimizer_compiled.py


@dataclass(frozen=True)
class Case:
    """How to build one optimizer under test: ``make(params, lr_scale=1.0, **torch_kwargs)``."""

    name: str
    rule: str | None  # None: torch.optim.Adam
    path: str = "batched"

    @property
    def symbolic(self) -> bool:
        return self.rule is not None

    def make(
        self, params: Any, lr_scale: float | torch.Tensor = 1.0, eps: float | None = None, **kw: Any
    ) -> torch.optim.Optimizer:
        """The optimizer; ``eps`` overrides Adam's / the rule's features' eps."""
        if self.rule is None:
            return torch.optim.Adam(params, lr=1e-2 * lr_scale, **({} if eps is None else {"eps": eps}), **kw)
        eq = RULES[self.rule]()
        if eps is not None:
            kw["feature_spec"] = {**(eq.provenance.get("feature_spec") or {}), "eps": eps}
        return SymbolicOptimizer(params, eq, lr=lr_scale, **PATHS[self.path], **kw)


CASES = [Case("torch_adam", None)] + [
    Case(f"{rule}-{path}", rule, path)
    for rule in RULES
    for path in PATHS
    if path != "compiled" or rule in COMPILED_RULES
]
IDS = [c.name for c in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


# -- problems ------------------------------------------------------------------------------------------------
class Net(nn.Module):
    """Parameters of every kind the contract names: a 0-dim scale, an empty tensor, a non-contiguous
    matrix, and ordinary weights and biases."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(6, 5, generator=g, dtype=dtype) * 0.5)
        self.b = nn.Parameter(torch.randn(6, generator=g, dtype=dtype) * 0.1)
        self.t = nn.Parameter((torch.randn(3, 6, generator=g, dtype=dtype) * 0.5).t())  # non-contiguous
        self.scale = nn.Parameter(torch.tensor(0.8, dtype=dtype))  # 0-dim
        self.empty = nn.Parameter(torch.zeros(0, 3, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ self.w.t() + self.b)
        return self.scale * (h @ self.t) + self.empty.sum()


def _batch(k: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + k)
    return torch.randn(16, 5, generator=g).to(dtype), torch.randn(16, 3, generator=g).to(dtype)


def _loss(model: nn.Module, k: int) -> torch.Tensor:
    x, y = _batch(k, next(model.parameters()).dtype)
    return ((model(x) - y) ** 2).mean()


def _value(model: nn.Module, k: int) -> float:
    with torch.no_grad():
        return float(_loss(model, k))


def _grads(model: nn.Module, k: int) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = _loss(model, k)
    loss.backward()
    return loss.detach()


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for k in steps:
        _grads(model, k)
        opt.step()


def _equal(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def _close(a: nn.Module, b: nn.Module, **tol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, msg=name, **tol)


def _same_state_dict(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"] and a.get("equation") == b.get("equation")
    assert a["state"].keys() == b["state"].keys()
    for i, s in a["state"].items():
        t = b["state"][i]
        assert s.keys() == t.keys(), i
        for key, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(t[key])), (i, key)


# -- direction, closures, printing -------------------------------------------------------------------------
@pytest.mark.parametrize("maximize", [False, True])
def test_goes_the_right_direction(case: Case, maximize: bool) -> None:
    model = Net()
    opt = case.make(model.parameters(), maximize=maximize)
    repr(opt)
    first = _value(model, 0)
    for _ in range(15):
        opt.step(lambda: _grads(model, 0))
    last = _value(model, 0)
    assert (last > first) if maximize else (last < first)


def test_maximize_is_descent_on_the_negated_gradient_per_group(case: Case) -> None:
    a, b = Net(), Net()
    pa, pb = list(a.parameters()), list(b.parameters())
    opt_a = case.make([{"params": pa[:2], "maximize": True}, {"params": pa[2:]}])
    opt_b = case.make([{"params": pb[:2]}, {"params": pb[2:]}])
    for k in range(4):
        _grads(a, k)
        _grads(b, k)
        for p in pb[:2]:
            p.grad.neg_()  # type: ignore[union-attr]
        opt_a.step()
        opt_b.step()
    _equal(a, b)


def test_closure_is_called_once_and_its_loss_returned(case: Case) -> None:
    model = Net()
    opt = case.make(model.parameters())
    calls: list[int] = []

    def closure() -> torch.Tensor:
        calls.append(1)
        return _grads(model, 0)

    loss = opt.step(closure)
    assert len(calls) == 1 and torch.equal(loss, _loss(Net(), 0).detach())


def test_deterministic(case: Case) -> None:
    a, b = Net(), Net()
    _train(a, case.make(a.parameters()), range(6))
    _train(b, case.make(b.parameters()), range(6))
    _equal(a, b)


# -- state dicts, copies, checkpoints --------------------------------------------------------------------
def _primed(case: Case, steps: int = 5) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = Net()
    opt = case.make(model.parameters())
    _train(model, opt, range(steps))
    return model, opt


def _weights_only_round_trip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("how", ["deepcopy", "torch.save/weights_only"])
def test_state_dict_round_trip_continues_bit_identically(case: Case, how: str) -> None:
    model, opt = _primed(case)
    sd = opt.state_dict()
    saved = copy.deepcopy(sd) if how == "deepcopy" else _weights_only_round_trip(sd)
    clone = copy.deepcopy(model)
    opt_c = case.make(clone.parameters())
    opt_c.load_state_dict(saved)
    _same_state_dict(opt_c.state_dict(), opt.state_dict())
    _train(model, opt, range(5, 10))
    _train(clone, opt_c, range(5, 10))
    _equal(model, clone)
    _same_state_dict(opt_c.state_dict(), opt.state_dict())


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimizer_continues_bit_identically(case: Case, how: str) -> None:
    model, opt = _primed(case)
    pair = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    clone, opt_c = pair
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(opt_c) if not k.startswith("_")}
    _train(model, opt, range(5, 10))
    _train(clone, opt_c, range(5, 10))
    _equal(model, clone)
    _same_state_dict(opt_c.state_dict(), opt.state_dict())


def test_state_dict_is_deterministic_and_identical_for_equal_parameters(case: Case) -> None:
    _, a = _primed(case)
    _, b = _primed(case)
    _same_state_dict(a.state_dict(), b.state_dict())


def test_a_state_dict_with_numeric_steps_loads(case: Case) -> None:
    """Old checkpoints keep ``step`` as a Python number (torch's test_load_nontensor_step)."""
    model, opt = _primed(case)
    sd = copy.deepcopy(opt.state_dict())
    for s in sd["state"].values():
        s["step"] = int(s["step"])
    clone = copy.deepcopy(model)
    opt_c = case.make(clone.parameters())
    opt_c.load_state_dict(sd)
    assert all(torch.is_tensor(s["step"]) for s in opt_c.state.values())
    _train(model, opt, range(5, 8))
    _train(clone, opt_c, range(5, 8))
    _equal(model, clone)


def test_state_dict_loads_across_dtypes(case: Case) -> None:
    """float32 state into a float64 model (torch casts floating state to the parameter's dtype)."""
    model, opt = _primed(case)
    wide = Net(dtype=torch.float64)
    wide.load_state_dict(model.state_dict())
    opt_w = case.make(wide.parameters())
    opt_w.load_state_dict(copy.deepcopy(opt.state_dict()))
    for s in opt_w.state.values():
        assert all(v.dtype == torch.float64 for k, v in s.items() if k != "step")
    _train(model, opt, range(5, 9))
    _train(wide, opt_w, range(5, 9))
    for p, q in zip(model.parameters(), wide.parameters(), strict=True):
        torch.testing.assert_close(q.float(), p, rtol=1e-4, atol=1e-5)


def test_distributed_checkpoint_get_and_set(case: Case) -> None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    model, opt = _primed(case)
    osd = get_optimizer_state_dict(model, opt)
    clone = copy.deepcopy(model)
    opt_c = case.make(clone.parameters())
    set_optimizer_state_dict(clone, opt_c, copy.deepcopy(osd))
    _train(model, opt, range(5, 9))
    _train(clone, opt_c, range(5, 9))
    _equal(model, clone)


def test_distributed_checkpoint_of_a_fresh_optimizer(case: Case) -> None:
    """DCP initialises an empty state by a step with zero gradients at lr 0: nothing may move."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = Net()
    before = copy.deepcopy(model)
    opt = case.make(model.parameters())
    osd = get_optimizer_state_dict(model, opt)
    assert osd["state"] and opt.param_groups[0]["lr"] == case.make(Net().parameters()).param_groups[0]["lr"]
    _equal(model, before)


# -- param groups ----------------------------------------------------------------------------------------
def test_param_groups_lr_and_add_param_group(case: Case) -> None:
    model = Net()
    ps = list(model.parameters())
    frozen = [p.detach().clone() for p in ps[2:]]
    opt = case.make([{"params": ps[:2]}, {"params": ps[2:3], "lr": 0.0}])
    _train(model, opt, range(3))
    assert torch.equal(ps[2], frozen[0])  # lr 0: unchanged
    opt.add_param_group({"params": ps[3:]})
    assert opt.param_groups[-1]["lr"] == opt.defaults["lr"]
    _train(model, opt, range(3, 6))
    assert not torch.equal(ps[3], frozen[1])  # the added group steps
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": ps[:1]})


# -- gradients: none, zero, sparse -----------------------------------------------------------------------
def test_no_gradient_is_a_no_op(case: Case) -> None:
    model = Net()
    before = copy.deepcopy(model)
    opt = case.make(model.parameters())
    opt.step()
    _equal(model, before)
    assert len(opt.state) == 0


def test_zero_gradients_are_a_no_op(case: Case) -> None:
    model = Net()
    before = copy.deepcopy(model)
    opt = case.make(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(3):
        opt.step()
    _equal(model, before)


def test_sparse_gradients_are_refused_before_any_change(case: Case) -> None:
    model = Net()
    before = copy.deepcopy(model)
    opt = case.make(model.parameters())
    _grads(model, 0)
    model.t.grad = model.t.grad.to_sparse()  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    _equal(model, before)


def test_a_refusal_in_a_later_group_changes_nothing_in_earlier_ones() -> None:
    model = Net()
    ps = list(model.parameters())
    before = copy.deepcopy(model)
    opt = SymbolicOptimizer([{"params": ps[:2]}, {"params": ps[2:]}], RULES["eq6_lags"](), batch_numel=0)
    _grads(model, 0)
    model.t.grad = model.t.grad.to_sparse()  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="does not support sparse"):
        opt.step()
    _equal(model, before)
    assert len(opt.state) == 0


def test_unsupported_dtypes_are_refused_before_any_change() -> None:
    w = nn.Parameter(torch.randn(3))
    f8 = torch.zeros(3, dtype=torch.float8_e4m3fn)
    f8.grad = torch.ones(3, dtype=torch.float8_e4m3fn)
    w.grad = torch.ones(3)
    before = w.detach().clone()
    opt = SymbolicOptimizer([w, f8], RULES["adam_form"]())
    with pytest.raises(TypeError, match="does not step torch.float8_e4m3fn parameters"):
        opt.step()
    assert torch.equal(w, before) and len(opt.state) == 0


# -- parameter shapes and dtypes -------------------------------------------------------------------------
def test_zero_dim_empty_and_non_contiguous_parameters(case: Case) -> None:
    """The same steps as on contiguous copies of the same values."""
    model = Net()
    assert not model.t.is_contiguous() and model.scale.dim() == 0 and model.empty.numel() == 0
    ref = Net()
    ref.t = nn.Parameter(ref.t.detach().contiguous())
    assert ref.t.is_contiguous()
    _train(model, case.make(model.parameters()), range(5))
    _train(ref, case.make(ref.parameters()), range(5))
    _close(ref, model, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_dtypes(case: Case, dtype: torch.dtype) -> None:
    """Steps in each dtype follow the float32 steps to that dtype's precision, and the state keeps the dtype."""
    # float16 cannot hold Adam's v = (1 - 0.999) * g**2 for small gradients: it underflows to 0 and m_hat
    # jumps (0/0 where eps=1e-8, which float16 rounds to 0), for torch's Adam as for a rule with Adam's rates:
    # such a rule is held to torch's Adam in float16. The compiled kernel computes in float32 (inductor's
    # opmath) and only stores float16: it stays finite and descends.
    rough = dtype == torch.float16 and case.rule == "adam_form" and case.path == "compiled"
    like_torch = dtype == torch.float16 and case.rule in (None, "adam_form") and not rough
    ref_case = Case("torch_adam", None) if like_torch else case
    ref, model = Net(), Net()
    model.to(dtype)
    if like_torch:
        ref.to(dtype)
    opt = case.make(model.parameters())
    ref_opt = ref_case.make(ref.parameters())
    for k in range(5):
        for m, o in ((model, opt), (ref, ref_opt)):
            m.zero_grad(set_to_none=True)
            x, y = _batch(k)
            wide = next(m.parameters()).dtype
            ((m(x.to(wide)).float() - y) ** 2).mean().backward()
            o.step()
    for s in opt.state.values():
        assert all(v.dtype == dtype for k, v in s.items() if k != "step")
    # half precision: a coordinate with a tiny gradient may take a step of the other sign (m_hat's sign is
    # noise there): at most 5 steps of 1e-2
    tol = 1e-5 if dtype == torch.float64 else 1e-3 if like_torch else 6e-2
    if rough:
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert _value(model.float(), 0) < _value(Net(), 0)
        return
    for (name, p), q in zip(ref.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(q.float(), p.float(), rtol=tol, atol=tol, msg=name, equal_nan=like_torch)


def test_mixed_dtypes_in_one_optimizer(case: Case) -> None:
    """Parameters of several dtypes in one group step as they would in one optimizer per dtype."""
    g = torch.Generator().manual_seed(3)
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    mixed = [nn.Parameter(torch.randn(4, 3, generator=g).to(d)) for d in dtypes]
    alone = [nn.Parameter(p.detach().clone()) for p in mixed]
    opt = case.make(mixed)
    opts = [case.make([p]) for p in alone]
    for k in range(4):
        gk = torch.Generator().manual_seed(k)
        for p, q in zip(mixed, alone, strict=True):
            grad = torch.randn(4, 3, generator=gk).to(p.dtype)
            p.grad, q.grad = grad, grad.clone()
        opt.step()
        for o in opts:
            o.step()
    for p, q in zip(mixed, alone, strict=True):
        assert p.dtype == q.dtype
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_complex_parameters_step_as_their_real_view(case: Case) -> None:
    """torch's _test_complex_optimizer: a complex parameter and its ``view_as_real`` twin step alike."""
    torch.manual_seed(0)
    cplx = torch.randn(5, 5, dtype=torch.complex64, requires_grad=True)
    real = torch.view_as_real(cplx).detach().clone().requires_grad_()
    opt_c, opt_r = case.make([cplx]), case.make([real])
    for _ in range(4):
        cplx.grad = torch.randn_like(cplx)
        real.grad = torch.view_as_real(cplx.grad).clone()
        opt_c.step()
        opt_r.step()
        torch.testing.assert_close(torch.view_as_real(cplx), real, rtol=0, atol=0)


def test_complex_2d_matches_real_and_imaginary_parts(case: Case) -> None:
    """torch's _test_complex_2d: a complex parameter against its real and imaginary parts as two."""
    torch.manual_seed(1)
    a1 = torch.randn(2, dtype=torch.complex64, requires_grad=True)
    re, im = a1.real.detach().clone().requires_grad_(), a1.imag.detach().clone().requires_grad_()
    opt1, opt2 = case.make([a1]), case.make([re, im])

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z.abs() ** 2).sum() + (z * (1 + 2j)).real.sum()

    for _ in range(6):
        opt1.zero_grad()
        opt2.zero_grad()
        f(a1).backward()
        f(torch.complex(re, im)).backward()
        opt1.step()
        opt2.step()
        torch.testing.assert_close(a1.real, re, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a1.imag, im, rtol=1e-6, atol=1e-7)


# -- learning rates and schedulers -----------------------------------------------------------------------
def test_tensor_lr_steps_as_the_float_lr(case: Case) -> None:
    a, b = Net(), Net()
    opt_a = case.make(a.parameters(), lr_scale=torch.tensor(0.5))
    opt_b = case.make(b.parameters(), lr_scale=0.5)
    assert torch.is_tensor(opt_a.param_groups[0]["lr"])
    _train(a, opt_a, range(5))
    _train(b, opt_b, range(5))
    _close(b, a, rtol=1e-6, atol=1e-7)


def _schedulers() -> dict[str, Callable[[torch.optim.Optimizer], Any]]:
    """Every scheduler of ``torch.optim.lr_scheduler`` with only its required arguments (and SWALR)."""
    return {
        "LambdaLR": lambda o: lrs.LambdaLR(o, lambda e: 0.9**e),
        "MultiplicativeLR": lambda o: lrs.MultiplicativeLR(o, lambda e: 0.9),
        "StepLR": lambda o: lrs.StepLR(o, step_size=2),
        "MultiStepLR": lambda o: lrs.MultiStepLR(o, milestones=[2, 4]),
        "ConstantLR": lambda o: lrs.ConstantLR(o),
        "LinearLR": lambda o: lrs.LinearLR(o),
        "ExponentialLR": lambda o: lrs.ExponentialLR(o, gamma=0.8),
        "SequentialLR": lambda o: lrs.SequentialLR(
            o, [lrs.ConstantLR(o), lrs.ExponentialLR(o, gamma=0.8)], milestones=[3]
        ),
        "CosineAnnealingLR": lambda o: lrs.CosineAnnealingLR(o, T_max=5),
        "ChainedScheduler": lambda o: lrs.ChainedScheduler([lrs.ConstantLR(o), lrs.ExponentialLR(o, 0.8)]),
        "ReduceLROnPlateau": lambda o: lrs.ReduceLROnPlateau(o, patience=0),
        "CyclicLR": lambda o: lrs.CyclicLR(o, base_lr=0.1 * _lr(o), max_lr=_lr(o), step_size_up=2),
        "CosineAnnealingWarmRestarts": lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=3),
        "OneCycleLR": lambda o: lrs.OneCycleLR(o, max_lr=_lr(o), total_steps=10),
        "PolynomialLR": lambda o: lrs.PolynomialLR(o),
        "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.5 * _lr(o)),
    }


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def test_every_scheduler_of_torch_is_covered() -> None:
    found = {
        name
        for name, cls in vars(lrs).items()
        if inspect.isclass(cls)
        and not name.startswith("_")
        and (issubclass(cls, lrs.LRScheduler) or cls is lrs.ReduceLROnPlateau)
        and cls is not lrs.LRScheduler
    }
    assert found <= set(_schedulers()), sorted(found - set(_schedulers()))


SCHEDULER_CASES = [c for c in CASES if c.path == "batched" or c.rule == "adam_form"]


@pytest.mark.parametrize("sched", sorted(_schedulers()))
@pytest.mark.parametrize("case", SCHEDULER_CASES, ids=[c.name for c in SCHEDULER_CASES])
def test_every_scheduler_with_default_arguments(case: Case, sched: str) -> None:
    """The scheduler drives the group's ``lr`` and the optimizer follows it exactly: the same steps as with
    the scheduler's values set by hand. Cycling ``betas`` (OneCycleLR, CyclicLR) changes no rule: the rule's
    feature rates are part of it, and SymbolicOptimizer says so once."""
    a, b = Net(), Net()
    opt_a, opt_b = case.make(a.parameters()), case.make(b.parameters())
    cycles = sched in ("OneCycleLR", "CyclicLR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler = _schedulers()[sched](opt_a)
        for k in range(8):
            for ga, gb in zip(opt_a.param_groups, opt_b.param_groups, strict=True):
                gb.update({key: v for key, v in ga.items() if key != "params"})
            _grads(a, k)
            _grads(b, k)
            opt_a.step()
            opt_b.step()
            if sched == "ReduceLROnPlateau":
                scheduler.step(1.0)  # no improvement: the lr drops every step
            else:
                scheduler.step()
    _equal(a, b)
    assert opt_a.param_groups[0]["lr"] != (1e-2 if not case.symbolic else 1.0) or sched in (
        "ConstantLR",
        "SWALR",
        "OneCycleLR",
        "CosineAnnealingWarmRestarts",
    )
    told = [w for w in caught if "cycle_momentum" in str(w.message)]
    assert bool(told) == (cycles and case.symbolic), [str(w.message) for w in caught]
    assert len(told) <= 2  # once per optimizer (opt_b gets opt_a's betas)


def test_cycled_betas_do_not_change_a_rule() -> None:
    a, b = Net(), Net()
    opt_a = SymbolicOptimizer(a.parameters(), RULES["adam_form"]())
    opt_b = SymbolicOptimizer(b.parameters(), RULES["adam_form"]())
    assert opt_a.defaults["betas"] == (0.9, 0.999)  # the rule's m_hat rates
    sched = lrs.OneCycleLR(opt_a, max_lr=1.0, total_steps=10, cycle_momentum=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cycle_momentum=False: nothing to warn about
        for k in range(5):
            opt_b.param_groups[0]["lr"] = opt_a.param_groups[0]["lr"]
            _grads(a, k)
            _grads(b, k)
            opt_a.step()
            opt_b.step()
            sched.step()
    opt_a.param_groups[0]["betas"] = (0.5, 0.5)
    opt_b.param_groups[0]["lr"] = opt_a.param_groups[0]["lr"]
    with pytest.warns(UserWarning, match=r"feature rates \(0.9, 0.999\) are part of the rule"):
        _train(a, opt_a, range(5, 7))
    _train(b, opt_b, range(5, 7))
    _equal(a, b)


# -- AMP -------------------------------------------------------------------------------------------------
def test_grad_scaler_step_unscales_exactly(case: Case) -> None:
    a, b = Net(), Net()
    opt_a, opt_b = case.make(a.parameters()), case.make(b.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for k in range(5):
        opt_a.zero_grad()
        scaler.scale(_loss(a, k)).backward()
        scaler.step(opt_a)
        scaler.update()
        _grads(b, k)
        opt_b.step()
    _equal(a, b)


def test_grad_scaler_skips_a_step_with_inf_gradients(case: Case) -> None:
    model, opt = _primed(case, 3)
    before_model = copy.deepcopy(model)
    before_sd = copy.deepcopy(opt.state_dict())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt.zero_grad()
    scaler.scale(_loss(model, 3)).backward()
    model.w.grad[0, 0] = float("inf")  # type: ignore[index]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**9
    _equal(model, before_model)
    _same_state_dict(opt.state_dict(), before_sd)


def test_grad_scaler_unscale_then_clip(case: Case) -> None:
    a, b = Net(), Net()
    opt_a, opt_b = case.make(a.parameters()), case.make(b.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for k in range(4):
        opt_a.zero_grad()
        scaler.scale(_loss(a, k)).backward()
        scaler.unscale_(opt_a)
        nn.utils.clip_grad_norm_(a.parameters(), 0.1)
        scaler.step(opt_a)
        scaler.update()
        _grads(b, k)
        nn.utils.clip_grad_norm_(b.parameters(), 0.1)
        opt_b.step()
    _close(b, a, rtol=1e-6, atol=1e-7)


# -- hooks -----------------------------------------------------------------------------------------------
def test_step_hooks(case: Case) -> None:
    model = Net()
    opt = case.make(model.parameters())
    calls: list[str] = []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    h2 = opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    h3 = register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre"))
    try:
        _train(model, opt, range(2))
    finally:
        h3.remove()
    assert calls == ["global pre", "pre", "post"] * 2
    h1.remove()
    h2.remove()
    _train(model, opt, range(1))
    assert len(calls) == 6


def test_state_dict_hooks(case: Case) -> None:
    model, opt = _primed(case, 2)
    seen: list[str] = []

    def pre(o: torch.optim.Optimizer) -> None:
        o.state["pre_hook_ran"] = True  # type: ignore[index]

    def post(o: torch.optim.Optimizer, sd: dict[str, Any]) -> dict[str, Any]:
        seen.append("post")
        sd["extra"] = o.state["pre_hook_ran"]  # type: ignore[index]
        return sd

    opt.register_state_dict_pre_hook(pre)
    opt.register_state_dict_post_hook(post)
    sd = opt.state_dict()
    assert sd["extra"] is True and seen == ["post"]


def test_load_state_dict_hooks_and_a_non_dict_state_value(case: Case) -> None:
    """torch's test_load_state_dict_post_hook: a post hook putting a plain value into ``opt.state``."""
    model, opt = _primed(case, 2)
    sd = copy.deepcopy(opt.state_dict())
    sd.pop("extra", None)
    clone = copy.deepcopy(model)
    opt_c = case.make(clone.parameters())
    order: list[str] = []

    def pre(o: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        order.append("pre")
        state_dict["param_groups"][0]["lr"] = state_dict["param_groups"][0]["lr"] * 1.0
        return state_dict

    def post(o: torch.optim.Optimizer) -> None:
        order.append("post")
        o.state["ran_load_state_dict_post_hook"] = True  # type: ignore[index]

    opt_c.register_load_state_dict_pre_hook(pre)
    opt_c.register_load_state_dict_post_hook(post)
    opt_c.load_state_dict(sd)
    assert order == ["pre", "post"] and opt_c.state["ran_load_state_dict_post_hook"] is True  # type: ignore[index]
    _train(model, opt, range(2, 5))
    _train(clone, opt_c, range(2, 5))
    _equal(model, clone)
    opt_c.state_dict()  # still serialisable


# -- torch.compile -------------------------------------------------------------------------------------
def _lr_at(k: int) -> float:
    return 1.0 / (1 + 0.1 * k)


def _compiled_run(
    case: Case, backend: str, steps: int, eager_steps: int = 0, tensor_lr: bool = False
) -> tuple[nn.Module, int, torch.Tensor]:
    """``steps`` training steps (forward, backward, ``opt.step()``, ``zero_grad``) through one
    ``torch.compile``-d function after ``eager_steps`` eager ones; returns the model, dynamo's frame count and
    the last loss. ``error_on_recompile``: any recompile raises."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = Net()
    opt = case.make(model.parameters(), lr_scale=torch.tensor(1.0) if tensor_lr else 1.0)
    _train(model, opt, range(eager_steps))
    opt.zero_grad()
    counter = CompileCounterWithBackend(backend)
    x, y = _batch(0)

    @torch.compile(backend=counter)
    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    loss = torch.tensor(0.0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for k in range(eager_steps, steps):
            if tensor_lr:
                opt.param_groups[0]["lr"].fill_(_lr_at(k))  # a schedule, no recompile
            x, y = _batch(k)
            loss = train_step(x, y)
    return model, counter.frame_count, loss


def _eager_run(case: Case, steps: int, tensor_lr: bool = False) -> nn.Module:
    model = Net()
    opt = case.make(model.parameters())
    for k in range(steps):
        if tensor_lr:
            opt.param_groups[0]["lr"] = _lr_at(k)
        x, y = _batch(k)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model


@functools.cache
def _adam_frames() -> int:
    """Dynamo's frame count for torch's Adam in the same compiled training step (the backward is a graph
    break: dynamo compiles the frame and its resumption)."""
    _, frames, _ = _compiled_run(CASES[0], "aot_eager", 3)
    return frames


COMPILE_CASES = [c for c in CASES if c.path == "batched"] + [
    Case("adam_form-compiled", "adam_form", "compiled")
]


@pytest.mark.parametrize("case", COMPILE_CASES, ids=[c.name for c in COMPILE_CASES])
def test_a_compiled_training_step_compiles_once(case: Case) -> None:
    """Forward, backward and ``opt.step()`` in one ``torch.compile``-d function: dynamo compiles the same
    frames as for torch's Adam (the backward is a graph break for both) on the first step and
    never again over 50 steps, and the steps are the eager ones."""
    model, frames, _ = _compiled_run(case, "aot_eager", 50)
    assert frames == _adam_frames()
    _close(_eager_run(case, 50), model, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["adam_form", "eq6_lags"])
def test_a_compiled_training_step_with_inductor(rule: str) -> None:
    """The same through inductor (C++ kernels), with a tensor lr a scheduler changes: no recompile."""
    case = Case(rule, rule)
    model, frames, _ = _compiled_run(case, "inductor", 12, tensor_lr=True)
    assert frames == _adam_frames()
    _close(_eager_run(case, 12, tensor_lr=True), model, rtol=1e-5, atol=1e-6)


def test_compiling_after_eager_steps_takes_over_the_state() -> None:
    """Eager (batched) steps first, then a compiled step: the flat buckets' state is taken over."""
    case = Case("eq6_lags", "eq6_lags")
    model, frames, _ = _compiled_run(case, "aot_eager", 12, eager_steps=4)
    assert frames == _adam_frames()
    _close(_eager_run(case, 12), model, rtol=1e-5, atol=1e-6)
