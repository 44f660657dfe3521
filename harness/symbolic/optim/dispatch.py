"""The one entry point of a symbolic step, :func:`symbolic_step`, and the implementations it chooses from, as
``torch.optim.Adam.step`` calls ``adam()``, which picks ``_single_tensor_adam``, ``_multi_tensor_adam`` or
``_fused_adam``:

* **differentiable** (:func:`~harness.symbolic.optim.optimizer.functional_step`): no mutation,
  :func:`~harness.symbolic.optim.step.symbolic_update`, gradients flow into the equation's constants;
* **traced** (inside a region ``torch.compile`` traces, e.g. a compiled training step that calls
  ``opt.step()``): every step-dependent value a tensor (:func:`~harness.symbolic.optim.step.traced_update`),
  so one graph serves every step;
* **batched** (parameters of at most ``batch_numel`` elements): flat buckets
  (:mod:`harness.symbolic.optim.batched`);
* **fused** (``compile=True``, larger parameters): one ``torch.compile``-d kernel per parameter
  (:class:`FusedKernels`);
* **per-tensor** (the rest): :func:`~harness.symbolic.optim.step.program_update` in place, chunk by chunk.

All of them compute the same FeatureSpec arithmetic and the same equation (float rounding apart). Complex
parameters are stepped as their ``torch.view_as_real`` twin; ``maximize`` negates the gradients.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.symbolic.optim.batched import BucketSet
from harness.symbolic.optim.step import (
    EquationPlan,
    Evaluator,
    ProgramCache,
    StepProgram,
    bias_betas,
    fused_step,
    plain_view,
    program_update,
    symbolic_update,
    traced_update,
)

__all__ = ["SUPPORTED_DTYPES", "FunctionalRule", "FusedKernels", "check_step_inputs", "symbolic_step"]

#: parameter dtypes a symbolic step accepts (complex ones are stepped as their ``view_as_real`` twin)
SUPPORTED_DTYPES: frozenset[torch.dtype] = frozenset(
    {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128}
)

State = MutableMapping[str, Any]


@dataclass(frozen=True)
class FunctionalRule:
    """What the differentiable implementation runs: the plan, the equation as ``{variable: tensor} -> update``
    and ``eta``'s parameters (None: the feature spec's)."""

    plan: EquationPlan
    evaluate: Evaluator
    feature_params: Tensor | None = None


class FusedKernels:
    """``compile=True``: one ``torch.compile``-d step kernel per (device, dtype), built on first use;
    :attr:`seconds` counts the steps that compiled one. When compiling fails it warns once and
    :attr:`enabled` turns False (the per-tensor path steps from then on)."""

    def __init__(self, programs: ProgramCache) -> None:
        self.programs = programs
        self.enabled = True
        self.seconds = 0.0
        self.kernels: dict[tuple[torch.device, torch.dtype], Callable[..., Any]] = {}

    def run(
        self,
        program: StepProgram,
        out: Tensor,
        g: Tensor,
        accs: dict[str, Tensor],
        rings: dict[str, Tensor],
        t: int,
        lr: float,
    ) -> bool:
        """One parameter's step through the kernel; False (nothing done) when compiling failed."""
        key = (out.device, out.dtype)
        fn = self.kernels.get(key)
        if fn is None:
            fused = fused_step(self.programs.core(out.dtype).program)
            # a parallel loop whatever the first size seen (the thread count is not baked in)
            fn = torch.compile(fused, dynamic=True, fullgraph=True, options={"cpp.dynamic_threads": True})
            self.kernels[key] = fn
        powers = torch.tensor([b**t for b in bias_betas(program.plan)], dtype=torch.float64).to(out.device)
        lr_ = torch.tensor(lr, dtype=torch.float64).to(out.device)
        # plain tensors on the same memory (:func:`plain_view`): no graph per parameter rank or ring row
        reads = {
            name: plain_view(rings[r.key][(t - 1 - k) % r.slots])
            for r in program.rings
            for k, name in r.reads
            if k < r.slots
        }
        rw = [plain_view(rings[r.key][(t - 1) % r.slots]) for r in program.rings]
        accs = {k: plain_view(v) for k, v in accs.items()}
        counters = torch._dynamo.utils.counters["stats"]  # pyright: ignore[reportAttributeAccessIssue]
        graphs = counters["unique_graphs"]
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # eta's parameters come through a functools.lru_cache (a constant tensor): dynamo traces
                # through it and says so; the traced values are the same constants
                warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
                fn(plain_view(out), plain_view(g), accs, reads, rw, powers, lr_)
        except Exception as exc:  # noqa: BLE001 -- any compiler failure: step eagerly from now on
            warnings.warn(
                f"SymbolicOptimizer(compile=True): compiling the step failed ({type(exc).__name__}: "
                f"{str(exc)[:300]}); stepping without compilation",
                RuntimeWarning,
                stacklevel=5,
            )
            self.enabled = False
            return False
        finally:
            if counters["unique_graphs"] != graphs:
                self.seconds += time.perf_counter() - t0
        return True


def check_step_inputs(params: Sequence[Tensor]) -> None:
    """Raise, before anything is changed, for what no implementation steps among ``params`` with a ``.grad``:
    sparse gradients, dtypes outside :data:`SUPPORTED_DTYPES`, a gradient whose shape is not its
    parameter's."""
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse or p.is_sparse:
            raise RuntimeError("SymbolicOptimizer does not support sparse gradients or parameters")
        if p.dtype not in SUPPORTED_DTYPES:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES))
            raise TypeError(f"SymbolicOptimizer does not step {p.dtype} parameters (supported: {names})")
        if g.shape != p.shape:
            raise RuntimeError(
                f"gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}"
            )


def symbolic_step(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[State],
    programs: ProgramCache | None,
    *,
    lr: float | Tensor,
    maximize: bool = False,
    chunk_size: int = 1 << 18,
    batch_numel: int = 0,
    buckets: MutableMapping[Any, BucketSet] | None = None,
    group: int = 0,
    kernels: FusedKernels | None = None,
    functional: FunctionalRule | None = None,
) -> None:
    """Step ``params`` (with ``grads``, their states in the same order) by one update, choosing the
    implementation.

    ``functional`` given: the differentiable step (nothing mutated: ``params[i]`` and ``states[i]``'s entries are
    replaced by new tensors; state layout of :func:`~harness.symbolic.optim.optimizer.init_functional_state`).
    Otherwise in place, in the stateful layout (``step`` a 0-dim tensor, accumulators, rings): traced when
    ``torch.compile`` is tracing, else parameters of at most ``batch_numel`` elements through ``buckets``
    (keyed by ``group``, device and dtype), larger ones through ``kernels`` (``compile=True``) or per tensor.
    ``programs`` holds the stateful programs, built beforehand for every dtype stepped here.
    """
    if functional is not None:
        _differentiable(params, grads, states, functional, lr, maximize)
        return
    assert programs is not None
    if torch.compiler.is_compiling():
        _traced(params, grads, states, programs, lr, maximize)
        return
    lr_f = float(lr)
    small: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor], list[State]]] = {}
    for p, g, st in zip(params, grads, states, strict=True):
        if buckets is not None and p.numel() <= batch_numel and not p.is_complex():
            ps, gs, ss = small.setdefault((p.device, p.dtype), ([], [], []))
            ps.append(p)
            gs.append(g)
            ss.append(st)
        else:
            _per_tensor(p, g, st, programs, lr_f, maximize, chunk_size, kernels)
    for (device, dtype), (ps, gs, ss) in small.items():
        assert buckets is not None
        _batched(ps, gs, ss, programs, buckets, (group, device, dtype), lr_f, maximize, chunk_size)


def _real(p: Tensor) -> Tensor:
    return torch.view_as_real(p) if p.is_complex() else p


def _traced(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[State],
    programs: ProgramCache,
    lr: float | Tensor,
    maximize: bool,
) -> None:
    for p, g, st in zip(params, grads, states, strict=True):
        pr, gr = _real(p), _real(g)
        if maximize:
            gr = -gr
        st["step"].add_(1)
        traced_update(programs.core(pr.dtype), pr, gr.detach(), st, lr)


def _batched(
    ps: list[Tensor],
    gs: list[Tensor],
    ss: list[State],
    programs: ProgramCache,
    buckets: MutableMapping[Any, BucketSet],
    key: Any,
    lr: float,
    maximize: bool,
    chunk_size: int,
) -> None:
    program = programs.eager(key[2])
    bucket_set = buckets.get(key)
    if bucket_set is None or not bucket_set.matches(ps):
        rings = [(r.key, r.slots, r.fill) for r in program.rings]
        bucket_set = buckets[key] = BucketSet(ps, ss, list(program.plan.accumulators), rings)

    def update(g: Tensor, acc: Mapping[str, Tensor], hist: Mapping[str, Tensor], t: int) -> Any:
        return program_update(program, g, acc, hist, t)

    def alone(p: Tensor, g: Tensor, st: State) -> None:
        _per_tensor(p, g, st, programs, lr, maximize, chunk_size, None)

    bucket_set.step_(gs, update, lr, chunk_size, alone, maximize)


def _per_tensor(
    p: Tensor,
    grad: Tensor,
    state: State,
    programs: ProgramCache,
    lr: float,
    maximize: bool,
    chunk_size: int,
    kernels: FusedKernels | None,
) -> None:
    p = _real(p)
    program = programs.eager(p.dtype)
    step = state["step"]
    if step._base is not None:  # a bucket's view: this parameter leaves the bucket
        state["step"] = step = step.clone()
    t = int(step) + 1
    g = _real(grad).detach().to(p.dtype).contiguous().view(-1)
    if maximize:
        g = torch.neg(g)
    n = g.numel()
    direct = p.is_contiguous()
    out = p.view(-1) if direct else torch.zeros(n, dtype=p.dtype, device=p.device)
    accs = {k: state[k].view(-1) for k in program.plan.accumulators}
    rings = {r.key: state[r.key].view(r.slots, -1) for r in program.rings}
    if not (kernels is not None and kernels.enabled and kernels.run(program, out, g, accs, rings, t, lr)):
        for a in range(0, n, chunk_size):
            b = min(a + chunk_size, n)
            acc = {k: v[a:b] for k, v in accs.items()}
            hist = {k: r[:, a:b] for k, r in rings.items()}
            upd = program_update(program, g[a:b], acc, hist, t)
            out[a:b].add_(upd, alpha=lr)
    step.add_(1)
    if not direct:
        p.add_(out.view(p.shape))


def _differentiable(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[State],
    rule: FunctionalRule,
    lr: float | Tensor,
    maximize: bool,
) -> None:
    plan = rule.plan
    for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
        st = states[i]
        g = grad.detach().reshape(-1).to(p.dtype)
        if maximize:
            g = -g
        t = st["t"] + 1
        acc = {k: st[k] for k in plan.accumulators}
        hist = {f: st[f"hist_{f}"] for f, _, _ in plan.rings}
        upd, acc, hist = symbolic_update(
            plan, rule.evaluate, g, acc, hist, t, feature_params=rule.feature_params
        )
        params[i] = p + lr * upd.reshape(p.shape) if upd.dim() else p + lr * upd
        st.clear()
        st.update({"t": t, **acc, **{f"hist_{f}": h for f, h in hist.items()}})
