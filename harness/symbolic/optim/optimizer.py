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
import warnings
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from harness.features import FeatureSpec
from harness.jsonio import loads_json, read_text
from harness.symbolic.lang.compiled import CompiledEquation
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.names import EquationParseError
from harness.symbolic.optim.batched import DEFAULT_BATCH_NUMEL, BucketSet
from harness.symbolic.optim.dispatch import FunctionalRule, FusedKernels, check_step_inputs, symbolic_step
from harness.symbolic.optim.step import (
    EquationPlan,
    Evaluator,
    ProgramCache,
    RingPlan,
    StepProgram,
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
    "symbolic_step",
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
        params: parameters or param groups (each group may set its own ``lr`` and ``maximize``).
        equation: an :class:`Equation`, or a path / JSON of one.
        lr: multiplier of the equation's update (default 1.0; a float or a 0-dim tensor); schedulers act on it.
        maximize: step along the negated gradients (the rule maximises the objective).
        feature_spec: override the feature constants (default: ``equation.provenance["feature_spec"]``).
        chunk_size: elements processed per in-place chunk.
        batch_numel: parameters with at most this many elements are stepped together as one flat tensor
            (:mod:`harness.symbolic.optim.batched`); 0 steps every parameter on its own.
        compile: step each parameter above ``batch_numel`` with one ``torch.compile``-d kernel (CPU needs a
            C++ compiler; :attr:`compile_seconds`); if compiling fails it warns once and steps eagerly.

    ``defaults["betas"]`` is the rule's ``(beta1, beta2)`` (its features' EMA rates), there for the schedulers
    that cycle momentum (``OneCycleLR``, ``CyclicLR``): the rates are part of the distilled rule, so a cycled
    ``betas`` does not change the update (a warning says so once; ``cycle_momentum=False`` avoids it). The
    step count ``state["step"]`` is a 0-dim float32 tensor, as torch's own optimizers keep it. Complex
    parameters are stepped as their ``torch.view_as_real`` twin (state in that real layout). Speed knobs change
    results only by float rounding. No ``.grad``: skipped. Weight decay: in the equation. Steps go through
    :func:`~harness.symbolic.optim.dispatch.symbolic_step`; a step inside ``torch.compile`` is traced whole.
    """

    def __init__(
        self,
        params: Iterable[Any],
        equation: Equation | str | Path | Mapping[str, Any],
        lr: float | Tensor = 1.0,
        *,
        maximize: bool = False,
        feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        batch_numel: int = DEFAULT_BATCH_NUMEL,
        compile: bool = False,  # noqa: A002 -- torch's own word for it
    ) -> None:
        if isinstance(lr, Tensor):
            if lr.numel() != 1 or not lr.dtype.is_floating_point:
                raise ValueError("a tensor lr must be a floating-point tensor of one element")
            bad = not (math.isfinite(float(lr)) and float(lr) >= 0)
        else:
            bad = not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0)
        if bad:
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if int(batch_numel) < 0:
            raise ValueError(f"batch_numel must be >= 0, got {batch_numel}")
        eq = load_equation(equation)
        plan = EquationPlan.from_equation(eq, feature_spec)
        spec = plan.spec if plan.spec is not None else FeatureSpec(())
        self.betas: tuple[float, float] = (float(spec.beta1), float(spec.beta2))
        lr_value = lr if isinstance(lr, Tensor) else float(lr)
        super().__init__(params, {"lr": lr_value, "betas": self.betas, "maximize": bool(maximize)})
        self.equation = eq
        self.feature_spec = feature_spec
        self.plan = plan
        self.chunk_size = int(chunk_size)
        self.batch_numel = int(batch_numel)
        self.compile = bool(compile)
        self._setup()

    def _setup(self) -> None:
        """The caches a step builds and reads (never pickled: rebuilt from the equation)."""
        self.programs = ProgramCache(self.equation, self.plan)
        self.kernels = FusedKernels(self.programs)
        #: (param group index, device, dtype) -> flat buckets of that group's small parameters
        self._buckets: dict[tuple[int, torch.device, torch.dtype], BucketSet] = {}
        self._warned_betas = False
        self.register_load_state_dict_post_hook(SymbolicOptimizer._after_load, prepend=True)

    def _program(self, dtype: torch.dtype) -> StepProgram:
        """The eager step's program for parameters of this dtype (built once)."""
        return self.programs.eager(dtype)

    @property
    def _programs(self) -> dict[torch.dtype, StepProgram]:
        return self.programs.programs

    @property
    def compile_seconds(self) -> float:
        """Seconds spent in steps that compiled a kernel (``compile=True``; compilation and that first run)."""
        return self.kernels.seconds

    @classmethod
    def from_file(
        cls, params: Iterable[Any], path: str | Path, lr_mult: float = 1.0, **kwargs: Any
    ) -> SymbolicOptimizer:
        """Build from an equation JSON file; ``lr = lr_mult * kwargs.get("lr", 1.0)``."""
        lr = float(lr_mult) * float(kwargs.pop("lr", 1.0))
        return cls(params, load_equation(Path(path)), lr=lr, **kwargs)

    # -- pickling (deepcopy, pickle, torch.save of the whole optimizer) --------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(
            equation=self.equation,
            feature_spec=self.feature_spec,
            plan=self.plan,
            betas=self.betas,
            chunk_size=self.chunk_size,
            batch_numel=self.batch_numel,
            compile=self.compile,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._setup()

    # -- internals ---------------------------------------------------------------------------------
    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        """Fresh state of a (real) parameter: step 0, zero accumulators, rings holding ``h(0)``."""
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for key in self.plan.accumulators:
            state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        for r in self.programs.eager(p.dtype).rings:
            state[r.key] = torch.full((r.slots, *p.shape), r.fill, dtype=p.dtype, device=p.device)

    def _init_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], compiling: bool = False
    ) -> None:
        """Collect the group's parameters with a gradient and give each new one its state (and its dtype's
        programs: sympy work). Inside ``torch.compile`` dynamo runs this method eagerly (as for torch's own
        optimizers), so the traced step finds everything built; ``compiling`` is then True: the traced
        step's programs are built too and flat buckets are dissolved (each parameter's state its own
        tensors)."""
        states = self.state
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            params.append(p)
            grads.append(grad)
            state = states[p]
            if state and not compiling:
                continue
            real = torch.view_as_real(p) if p.is_complex() else p
            if not state:
                self._init_state(real, state)
            if compiling:
                self.programs.core(real.dtype)
                for k, v in list(state.items()):
                    if isinstance(v, Tensor) and v._base is not None:  # a flat bucket's view
                        state[k] = v.clone()
        if compiling:
            self._buckets.clear()
        if not self._warned_betas and tuple(group.get("betas", self.betas)) != self.betas:
            self._warned_betas = True
            warnings.warn(
                f"SymbolicOptimizer: param group betas set to {tuple(group['betas'])}; a rule's feature rates "
                f"{self.betas} are part of the rule and stay as they are (a scheduler cycling momentum changes "
                "nothing; pass cycle_momentum=False to OneCycleLR / CyclicLR)",
                UserWarning,
                stacklevel=4,
            )

    def state_bytes(self) -> int:
        """Bytes of all state tensors (accumulators and rings; the 0-dim step counts left out)."""
        return sum(
            v.numel() * v.element_size()
            for s in self.state.values()
            if isinstance(s, Mapping)
            for k, v in s.items()
            if isinstance(v, Tensor) and k != "step"
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()``'s loss if given.

        Everything the step refuses (sparse gradients, unsupported dtypes) is checked for every group before
        any parameter or state changes."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            check_step_inputs(group["params"])
        compiling = torch.compiler.is_compiling()
        for gi, group in enumerate(self.param_groups):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            self._init_group(group, params, grads, compiling)
            if not params:
                continue
            symbolic_step(
                params,
                grads,
                [self.state[p] for p in params],
                self.programs,
                lr=group["lr"],
                maximize=bool(group.get("maximize", False)),
                chunk_size=self.chunk_size,
                batch_numel=self.batch_numel,
                buckets=self._buckets,
                group=gi,
                kernels=self.kernels if self.compile else None,
            )
        if self.compile and not self.kernels.enabled:
            self.compile = False  # compiling failed (warned): eager from now on
        return loss

    # -- (de)serialisation ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state dict plus the equation's text (checked on load)."""
        sd = super().state_dict()
        sd["equation"] = self.equation.text
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuses state saved for a different equation. A ``step`` saved as a
        number becomes a tensor; a ring saved as the feature's own values (``hist_<feature>``) where this
        version keeps ``h(feature)`` is converted."""
        sd = dict(state_dict)
        text = sd.pop("equation", None)
        if text is not None and text != self.equation.text:
            raise ValueError(f"optimizer state was saved for equation {text!r}, not {self.equation.text!r}")
        super().load_state_dict(sd)

    @staticmethod
    def _after_load(opt: torch.optim.Optimizer) -> None:
        """The first load-state-dict post hook: own step tensors, old ring layouts converted; values that are
        not a parameter's state dict (another hook's) are left alone."""
        assert isinstance(opt, SymbolicOptimizer)
        opt._buckets.clear()
        for p, s in opt.state.items():
            if not isinstance(s, dict):
                continue
            if "step" in s:
                s["step"] = torch.tensor(float(s["step"]), dtype=torch.float32)
            if not isinstance(p, Tensor):
                continue
            dtype = torch.view_as_real(p).dtype if p.is_complex() else p.dtype
            for r in opt.programs.eager(dtype).rings:
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
    maximize: bool = False,
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
    names = [name for name, grad in grads.items() if grad is not None]
    ps = [params[name] for name in names]
    states: list[MutableMapping[str, Any]] = [dict(state[name]) for name in names]
    symbolic_step(
        ps,
        [grads[name] for name in names],
        states,
        None,
        lr=lr,
        maximize=maximize,
        functional=FunctionalRule(plan, run, feature_params),
    )
    new_params: dict[str, Tensor] = dict(params)
    new_state: dict[str, dict[str, Tensor]] = {k: dict(v) for k, v in state.items()}
    for name, p, st in zip(names, ps, states, strict=True):
        new_params[name] = p
        new_state[name] = dict(st)
    return new_params, new_state
