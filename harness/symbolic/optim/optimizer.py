"""Run an :class:`~harness.symbolic.lang.Equation` as a ``torch.optim`` optimizer, statefully or functionally.

``p <- p + lr * eq(features of p's gradient history)``: the equation gives the DELTA added to the parameters
(Adam is ``-0.001*m_hat_0``), ``lr`` (default 1.0) is a multiplier schedulers act on. Features are
:class:`~harness.features.FeatureSpec`'s, constants from ``equation.provenance["feature_spec"]``; state per
parameter is only what the equation reads. :meth:`SymbolicOptimizer.step` runs :func:`program_update` (in
place, chunked); :func:`functional_step` runs :func:`symbolic_update` (no mutation, differentiable). State
layout and drivers: ``docs/symbolic.md``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from harness.features import FeatureSpec
from harness.jsonio import loads_json, read_text
from harness.symbolic.lang.compiled import CompiledEquation
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.lowering import FUSED_TORCH_OPS, TORCH_OPS
from harness.symbolic.lang.names import EquationParseError
from harness.symbolic.optim.batched import DEFAULT_BATCH_NUMEL, BucketSet
from harness.symbolic.optim.step import (
    EquationPlan,
    Evaluator,
    RingPlan,
    StepProgram,
    _betas,
    _fused_step,
    _plain,
    feature_spec_for,
    program_update,
    symbolic_update,
)

__all__ = [
    "DEFAULT_CHUNK",
    "EquationPlan",
    "RingPlan",
    "StepProgram",
    "SymbolicOptimizer",
    "feature_spec_for",
    "functional_step",
    "init_functional_state",
    "load_equation",
    "program_update",
    "symbolic_update",
]

#: elements per in-place chunk of the stateful step (temporaries stay in cache)
DEFAULT_CHUNK = 1 << 18


def load_equation(source: Equation | str | Path | Mapping[str, Any]) -> Equation:
    """An Equation from an Equation, a JSON file path, a JSON dict, or a JSON string."""
    if isinstance(source, Equation):
        return source
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            text = read_text(text, "equation", EquationParseError)
        data = loads_json(text, f"{str(source)[:200]}: equation", EquationParseError)
    if isinstance(data, Mapping) and data.get("format") == "symbolic-l2o/pareto-front":
        raise ValueError(
            f"{source} is a Pareto front, not one equation: pick one (ParetoFront.best() or at_complexity()) "
            "and save it with Equation.save"
        )
    return Equation.from_json(data)


class SymbolicOptimizer(torch.optim.Optimizer):
    """``p <- p + lr * equation(features)``: a distilled (or hand-written) rule as a ``torch.optim`` optimizer.

    Args:
        params: parameters or param groups (each group may set its own ``lr``).
        equation: an :class:`Equation`, or a path / JSON of one.
        lr: multiplier of the equation's update (default 1.0); schedulers act on it.
        feature_spec: override the feature constants (default: ``equation.provenance["feature_spec"]``).
        chunk_size: elements processed per in-place chunk.
        batch_numel: parameters with at most this many elements are stepped together as one flat tensor
            (:mod:`harness.symbolic.optim.batched`); 0 steps every parameter on its own.
        compile: step each parameter above ``batch_numel`` with one ``torch.compile``-d kernel (CPU needs a
            C++ compiler; :attr:`compile_seconds`); if compiling fails it warns once and steps eagerly.

    Speed knobs change results only by float rounding. No ``.grad``: skipped. Weight decay: in the equation.
    """

    def __init__(
        self,
        params: Iterable[Any],
        equation: Equation | str | Path | Mapping[str, Any],
        lr: float = 1.0,
        *,
        feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        batch_numel: int = DEFAULT_BATCH_NUMEL,
        compile: bool = False,  # noqa: A002 -- torch's own word for it
    ) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if int(batch_numel) < 0:
            raise ValueError(f"batch_numel must be >= 0, got {batch_numel}")
        super().__init__(params, {"lr": float(lr)})
        self.equation = load_equation(equation)
        self.plan = EquationPlan.from_equation(self.equation, feature_spec)
        self.chunk_size = int(chunk_size)
        self.batch_numel = int(batch_numel)
        self.compile = bool(compile)
        #: seconds spent in steps that compiled a kernel (``compile=True``; compilation and that first run)
        self.compile_seconds = 0.0
        #: (param group index, device, dtype) -> flat buckets of that group's small parameters
        self._buckets: dict[tuple[int, torch.device, torch.dtype], BucketSet] = {}
        self._programs: dict[torch.dtype, StepProgram] = {}
        #: (device, dtype) -> the compiled step (its program's evaluators use FUSED_TORCH_OPS for float32)
        self._compiled: dict[tuple[torch.device, torch.dtype], Callable[..., Any]] = {}

    @classmethod
    def from_file(
        cls, params: Iterable[Any], path: str | Path, lr_mult: float = 1.0, **kwargs: Any
    ) -> SymbolicOptimizer:
        """Build from an equation JSON file; ``lr = lr_mult * kwargs.get("lr", 1.0)``."""
        lr = float(lr_mult) * float(kwargs.pop("lr", 1.0))
        return cls(params, load_equation(Path(path)), lr=lr, **kwargs)

    # -- internals ---------------------------------------------------------------------------------
    def _program(self, dtype: torch.dtype) -> StepProgram:
        """The stateful step's program for parameters of this dtype (built once; constants in this dtype)."""
        prog = self._programs.get(dtype)
        if prog is None:
            prog = self._programs[dtype] = StepProgram.build(self.equation, self.plan, dtype)
        return prog

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        for key in self.plan.accumulators:
            state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        for r in self._program(p.dtype).rings:
            state[r.key] = torch.full((r.slots, *p.shape), r.fill, dtype=p.dtype, device=p.device)

    def state_bytes(self) -> int:
        """Bytes of all state tensors (accumulators and rings)."""
        return sum(
            v.numel() * v.element_size()
            for s in self.state.values()
            for v in s.values()
            if isinstance(v, Tensor)
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        limit = self.batch_numel
        for gi, group in enumerate(self.param_groups):
            lr = float(group["lr"])
            small: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("SymbolicOptimizer does not support sparse gradients")
                if p.numel() <= limit:
                    ps, gs = small.setdefault((p.device, p.dtype), ([], []))
                    ps.append(p)
                    gs.append(grad)
                else:
                    self._step_param(p, grad, lr, self.compile)
            for (device, dtype), (ps, gs) in small.items():
                self._step_small(gi, device, dtype, ps, gs, lr)
        return loss

    def _step_small(
        self, gi: int, device: torch.device, dtype: torch.dtype, ps: list[Tensor], gs: list[Tensor], lr: float
    ) -> None:
        """Step small parameters of one group, device and dtype as flat buckets (:mod:`harness.symbolic.optim.batched`)."""
        key = (gi, device, dtype)
        program = self._program(dtype)
        buckets = self._buckets.get(key)
        if buckets is None or not buckets.matches(ps):
            rings = [(r.key, r.slots, r.fill) for r in program.rings]
            buckets = self._buckets[key] = BucketSet(ps, self.state, list(self.plan.accumulators), rings)

        def update(g: Tensor, acc: Mapping[str, Tensor], hist: Mapping[str, Tensor], t: int) -> Any:
            return program_update(program, g, acc, hist, t)

        buckets.step_(gs, update, lr, self.chunk_size, lambda p, g: self._step_param(p, g, lr, False))

    def _step_param(self, p: Tensor, grad: Tensor, lr: float, compiled: bool) -> None:
        program = self._program(p.dtype)
        state = self.state[p]
        if not state:
            self._init_state(p, state)
        t = int(state["step"]) + 1
        g = grad.detach().to(p.dtype).contiguous().view(-1)
        n = g.numel()
        direct = p.is_contiguous()
        out = p.view(-1) if direct else torch.zeros(n, dtype=p.dtype, device=p.device)
        accs = {k: state[k].view(-1) for k in self.plan.accumulators}
        rings = {r.key: state[r.key].view(r.slots, -1) for r in program.rings}
        if not (compiled and self._run_compiled(program, out, g, accs, rings, t, lr)):
            cs = self.chunk_size
            for a in range(0, n, cs):
                b = min(a + cs, n)
                acc = {k: v[a:b] for k, v in accs.items()}
                hist = {k: r[:, a:b] for k, r in rings.items()}
                upd = program_update(program, g[a:b], acc, hist, t)
                out[a:b].add_(upd, alpha=lr)
        state["step"] = t
        if not direct:
            p.add_(out.view(p.shape))

    def _run_compiled(
        self,
        program: StepProgram,
        out: Tensor,
        g: Tensor,
        accs: dict[str, Tensor],
        rings: dict[str, Tensor],
        t: int,
        lr: float,
    ) -> bool:
        """One parameter's step through the compiled kernel; False (nothing done) when compiling failed."""
        key = (out.device, out.dtype)
        fn = self._compiled.get(key)
        if fn is None:
            ops = FUSED_TORCH_OPS if out.dtype == torch.float32 else TORCH_OPS
            fused = _fused_step(StepProgram.build(self.equation, self.plan, out.dtype, ops))
            # a parallel loop whatever the first size seen (the thread count is not baked in)
            fn = torch.compile(fused, dynamic=True, fullgraph=True, options={"cpp.dynamic_threads": True})
            self._compiled[key] = fn
        powers = torch.tensor([b**t for b in _betas(self.plan)], dtype=torch.float64).to(out.device)
        lr_ = torch.tensor(lr, dtype=torch.float64).to(out.device)
        # plain tensors on the same memory (:func:`_plain`): no graph per parameter rank or ring row
        reads = {
            name: _plain(rings[r.key][(t - 1 - k) % r.slots])
            for r in program.rings
            for k, name in r.reads
            if k < r.slots
        }
        rw = [_plain(rings[r.key][(t - 1) % r.slots]) for r in program.rings]
        accs = {k: _plain(v) for k, v in accs.items()}
        counters = torch._dynamo.utils.counters["stats"]  # pyright: ignore[reportAttributeAccessIssue]
        graphs = counters["unique_graphs"]
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # eta's parameters come through a functools.lru_cache (a constant tensor): dynamo traces
                # through it and says so; the traced values are the same constants
                warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
                fn(_plain(out), _plain(g), accs, reads, rw, powers, lr_)
        except Exception as exc:  # noqa: BLE001 -- any compiler failure: step eagerly from now on
            warnings.warn(
                f"SymbolicOptimizer(compile=True): compiling the step failed ({type(exc).__name__}: "
                f"{str(exc)[:300]}); stepping without compilation",
                RuntimeWarning,
                stacklevel=4,
            )
            self.compile = False
            return False
        finally:
            if counters["unique_graphs"] != graphs:
                self.compile_seconds += time.perf_counter() - t0
        return True

    # -- (de)serialisation ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state dict plus the equation's text (checked on load)."""
        sd = super().state_dict()
        sd["equation"] = self.equation.text
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuses state saved for a different equation. A ring saved as the
        feature's own values (``hist_<feature>``) where this version keeps ``h(feature)`` is converted."""
        sd = dict(state_dict)
        text = sd.pop("equation", None)
        if text is not None and text != self.equation.text:
            raise ValueError(f"optimizer state was saved for equation {text!r}, not {self.equation.text!r}")
        super().load_state_dict(sd)
        self._buckets.clear()
        for p, s in self.state.items():
            if "step" in s:
                s["step"] = int(s["step"])
            if not isinstance(p, Tensor):
                continue
            for r in self._program(p.dtype).rings:
                raw = f"hist_{r.feature}"
                if r.h is not None and r.key not in s and isinstance(s.get(raw), Tensor):
                    old = s.pop(raw)
                    val, _ = r.h({r.var: old.reshape(-1)})  # type: ignore[dict-item]
                    s[r.key] = (
                        torch.as_tensor(val, dtype=old.dtype, device=old.device).reshape(old.shape).clone()
                    )


# ---------------------------------------------------------------------------------------------------
# functional API (differentiable unrolls)
# ---------------------------------------------------------------------------------------------------
def _plan_of(
    module: CompiledEquation[Equation], feature_spec: FeatureSpec | Mapping[str, Any] | None
) -> EquationPlan:
    return EquationPlan.from_equation(module.equation, feature_spec)


def init_functional_state(
    equation: Equation | CompiledEquation[Equation],
    params: Mapping[str, Tensor],
    *,
    feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Fresh functional state for :func:`functional_step`: per parameter name, FeatureSpec's functional state
    (``t`` and accumulators, flat) plus ``hist_<feature>`` ``[max_lag, numel]``, oldest first (the last row is
    lag 1)."""
    eq = equation.equation if isinstance(equation, CompiledEquation) else equation
    plan = EquationPlan.from_equation(eq, feature_spec)
    out: dict[str, dict[str, Tensor]] = {}
    for name, p in params.items():
        n = p.numel()
        if plan.spec is not None:
            st = plan.spec.init(n, device=p.device, dtype=p.dtype)
        else:
            st = {"t": torch.zeros((), device=p.device, dtype=p.dtype)}
        for f, _, slots in plan.rings:
            st[f"hist_{f}"] = torch.zeros(slots, n, device=p.device, dtype=p.dtype)
        out[name] = st
    return out


def functional_step(
    equation_module: CompiledEquation[Equation],
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: Mapping[str, Mapping[str, Tensor]],
    *,
    lr: float | Tensor = 1.0,
    constants: Sequence[Tensor] | None = None,
    feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
    feature_params: Tensor | None = None,
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """One update without mutation: ``new_p = p + lr * eq(features)`` for every name in ``grads``.

    Differentiable w.r.t. the module's constants (or ``constants``: one tensor per constant slot of the
    module, substituted with ``torch.func.functional_call``), w.r.t. ``feature_params`` (``eta``'s
    ``(k1, k2, a1, l1, l2, a2)``, overriding the feature spec's) and w.r.t. ``params``; gradients are detached
    (first-order). Parameters without a gradient are passed through unchanged. Matches
    :meth:`SymbolicOptimizer.step` (same FeatureSpec arithmetic) up to float rounding.
    """
    plan = _plan_of(equation_module, feature_spec)
    run: Evaluator = equation_module
    if constants is not None:
        override = {f"constants.{i}": c for i, c in enumerate(constants)}

        def run_with_constants(env: Mapping[str, Tensor]) -> Tensor:
            return functional_call(equation_module, override, (env,))

        run = run_with_constants
    new_params: dict[str, Tensor] = dict(params)
    new_state: dict[str, dict[str, Tensor]] = {k: dict(v) for k, v in state.items()}
    for name, grad in grads.items():
        if grad is None:
            continue
        p = params[name]
        st = state[name]
        g = grad.detach().reshape(-1).to(p.dtype)
        t = st["t"] + 1
        acc = {k: st[k] for k in plan.accumulators}
        hist = {f: st[f"hist_{f}"] for f, _, _ in plan.rings}
        upd, acc, hist = symbolic_update(plan, run, g, acc, hist, t, feature_params=feature_params)
        new_params[name] = p + lr * upd.reshape(p.shape) if upd.dim() else p + lr * upd
        new_state[name] = {"t": t, **acc, **{f"hist_{f}": h for f, h in hist.items()}}
    return new_params, new_state
