"""Run an :class:`~harness.symbolic.equation.Equation` as a ``torch.optim`` optimizer, statefully or functionally.

Sign convention: the equation gives the DELTA added to the parameters (the same convention as the teachers'
updates that SR is fitted to), and the param group's ``lr`` multiplies it::

    p <- p + lr * eq(features of p's gradient history)

so ``lr`` (default 1.0) is a plain multiplier that learning-rate schedulers (e.g. a cosine ``LambdaLR``) act on;
the equation's own constants carry the step size (Adam is ``-0.001*m_hat_0``).

Features come from :mod:`harness.features` (the one definition shared with teachers and the SR dataset):
accumulators and feature arithmetic are :class:`~harness.features.FeatureSpec`'s, with ``beta1, beta2, eps,
norm_p`` read from ``equation.provenance["feature_spec"]`` when present (else FeatureSpec's defaults, RNNprop's
0.95/0.95). Lag 0 is the newest value; lags not seen yet are zeros (as in :class:`~harness.features.History`).

State per parameter is only what the equation needs:

* ``step`` (a Python int);
* the accumulators of the features it reads (``FeatureSpec.accumulators()``: ``m``/``v`` for ``m_hat``, ``v`` for
  ``g_hat``, ``ema_*``/``pow_*`` for momenta), each shaped like the parameter;
* for each feature read at a lag ``> 0``, ``hist_<feature>``: a ring of its past ``max_lag`` values, shaped
  ``[max_lag, *param.shape]`` (lag 0 is computed from the current gradient, so it is never stored). An equation
  over ``g_0, g_3`` keeps ``hist_g`` with 3 slots and nothing else; Adam's equation keeps ``m`` and ``v``.

One arithmetic, two drivers (as ``torch.optim.Adam.step`` calls ``adam()``): :func:`symbolic_update` computes the
update and the new accumulators and lag buffers from the plan, the gradient, ``t`` and the compiled equation.
The stateful :meth:`SymbolicOptimizer.step` calls it in place on cache-sized chunks of each parameter (no
parameter-sized temporaries; on CPU that keeps it near ``torch.optim.Adam(foreach=True)``,
``benchmarks/perf/optimizer_step.py``). Small parameters (``batch_numel``) are stepped together, per param group,
device and dtype, as one flat tensor (:mod:`harness.symbolic.batched`: foreach copies in and out, one feature update
and one equation evaluation for all of them; their state entries are views of flat buffers, in the per-parameter
layout above). :func:`functional_step` calls it without mutation, differentiable w.r.t.
the compiled equation's constants, for unrolled meta-tuning. Gradients are inputs (detached: first-order, as in
the L2O literature).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from harness.features import ETA, FeatureSpec, parse_variable
from harness.symbolic.batched import DEFAULT_BATCH_NUMEL, BucketSet
from harness.symbolic.compiled import CompiledEquation
from harness.symbolic.expression import Equation
from harness.symbolic.names import loads_json, read_json_text

__all__ = [
    "DEFAULT_CHUNK",
    "EquationPlan",
    "SymbolicOptimizer",
    "feature_spec_for",
    "functional_step",
    "init_functional_state",
    "load_equation",
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
            text = read_json_text(text, "equation")
        data = loads_json(text, f"{str(source)[:200]}: equation")
    if isinstance(data, Mapping) and data.get("format") == "symbolic-l2o/pareto-front":
        raise ValueError(
            f"{source} is a Pareto front, not one equation: pick one (ParetoFront.best() or at_complexity()) "
            "and save it with Equation.save"
        )
    return Equation.from_json(data)


def feature_spec_for(
    equation: Equation, feature_spec: FeatureSpec | Mapping[str, Any] | None = None
) -> FeatureSpec | None:
    """The FeatureSpec computing exactly the features ``equation`` reads (``lags=1``: the optimizer keeps its own
    per-feature rings), with constants from ``feature_spec`` or ``equation.provenance["feature_spec"]``.

    None when the equation reads no feature at all.
    """
    names = tuple(equation.features_used())
    if not names:
        return None
    src = feature_spec if feature_spec is not None else equation.provenance.get("feature_spec")
    if isinstance(src, FeatureSpec):
        src = src.to_dict()
    consts: dict[str, Any] = {}
    if src:
        consts = {k: src[k] for k in ("beta1", "beta2", "eps", "norm_p") if src.get(k) is not None}
        if ETA in names and src.get("eta_params") is not None:
            consts["eta_params"] = tuple(src["eta_params"])
    return FeatureSpec(names, lags=1, **consts)


@dataclass(frozen=True)
class EquationPlan:
    """What one equation needs per parameter: which features, which accumulators, which lags.

    Attributes:
        spec: features computed each step (None: the equation reads none).
        lag0: ``(column in spec, variable name)`` of every feature read at lag 0.
        lagged: ``(feature, lag, variable name)`` of every read at lag > 0.
        rings: ``(feature, column, slots)``: features with a history ring of ``slots = max lag`` entries.
    """

    spec: FeatureSpec | None
    lag0: tuple[tuple[int, str], ...]
    lagged: tuple[tuple[str, int, str], ...]
    rings: tuple[tuple[str, int, int], ...]

    @classmethod
    def from_equation(
        cls, equation: Equation, feature_spec: FeatureSpec | Mapping[str, Any] | None = None
    ) -> EquationPlan:
        spec = feature_spec_for(equation, feature_spec)
        column = {name: j for j, name in enumerate(spec.names)} if spec is not None else {}
        lag0: list[tuple[int, str]] = []
        lagged: list[tuple[str, int, str]] = []
        for var in equation.variables:
            feature, lag = parse_variable(var)
            if lag == 0:
                lag0.append((column[feature], var))
            else:
                lagged.append((feature, lag, var))
        rings = tuple((f, column[f], max(lags)) for f, lags in equation.lags_used().items() if max(lags) > 0)
        return cls(spec, tuple(lag0), tuple(lagged), rings)

    @property
    def accumulators(self) -> dict[str, tuple[str, float]]:
        return self.spec.accumulators() if self.spec is not None else {}

    def state_keys(self) -> list[str]:
        """Tensor state keys per parameter (besides ``step``)."""
        return list(self.accumulators) + [f"hist_{f}" for f, _, _ in self.rings]


Evaluator = Callable[[Mapping[str, Tensor]], Tensor]
"""A compiled equation as ``{variable: tensor} -> update`` (its constants bound)."""


def _fast_evaluator(module: CompiledEquation[Equation]) -> Evaluator:
    """``module``'s expression as ``env -> tensor`` for the stateful step, without ``forward``'s per-call input
    checks (~100 us per call in Python) and with its constants as Python floats (their float32 values), so
    constant-only arithmetic (``w*gamma``, ``1/gamma``) costs no tensor op. Falls back to the constants as
    tensors when a probe evaluation fails with floats (e.g. ``exp(c)`` of a bare constant), and to ``forward``
    if the module's internals differ."""
    fn = getattr(module, "_fn", None)
    if fn is None:
        return module
    consts = list(module.constants)
    values = [float(c) for c in consts]
    first = consts[0] if consts else None
    probe = {v: torch.zeros(1, dtype=first.dtype if first is not None else None) for v in module.variables}
    try:
        fn((probe, values))
    except Exception:  # noqa: BLE001 -- any failure means: keep the tensor constants
        return lambda env: fn((env, consts))
    return lambda env: fn((env, values))


def symbolic_update(
    plan: EquationPlan,
    evaluate: Evaluator,
    g: Tensor,
    acc: Mapping[str, Tensor],
    hist: Mapping[str, Tensor],
    t: int | Tensor,
    *,
    inplace: bool = False,
    feature_params: Tensor | None = None,
) -> tuple[Tensor, Mapping[str, Tensor], Mapping[str, Tensor]]:
    """The arithmetic of one symbolic step on flat coordinates, shared by both APIs.

    Args:
        plan: what the equation reads (:class:`EquationPlan`).
        evaluate: the compiled equation (constants bound), ``{variable: tensor} -> update``.
        g: flat gradient (detached), the ``t``-th one.
        acc: the plan's accumulators, flat like ``g``.
        hist: per ring feature ``f`` of the plan, its past values ``[slots, n]``.
        t: gradients seen including ``g`` (a Python int when ``inplace``; may be a 0-dim tensor otherwise).
        inplace: the stateful path: fold ``g`` into ``acc`` in place (:meth:`FeatureSpec.update_`) and keep
            ``hist`` as rings, lag ``k`` at row ``(t - 1 - k) % slots``, overwriting the oldest row with the
            newest value. Otherwise nothing is mutated (:meth:`FeatureSpec.advance`) and ``hist`` is ordered
            oldest first (lag ``k`` at row ``slots - k``) and shifted by one row.
        feature_params: the functional path's override of ``eta``'s parameters (a tensor that gradients may
            flow into; :meth:`FeatureSpec.advance`).
    Returns:
        ``(update, accumulators, hist)`` after this step (in place: the same tensors, updated). The update is
        not yet multiplied by the learning rate.
    """
    spec = plan.spec
    env: dict[str, Tensor] = {}
    feats: Tensor | None = None
    new_acc: Mapping[str, Tensor] = acc
    if spec is not None:
        if inplace:
            feats = spec.update_(acc, g, float(t))
        else:
            feats, new_acc = spec.advance(acc, g, t, eta_params=feature_params)
        for j, var in plan.lag0:
            env[var] = feats[:, j]
    if inplace:
        step = int(t)
        for f, k, var in plan.lagged:
            ring = hist[f]
            env[var] = ring[(step - 1 - k) % ring.shape[0]]
    else:
        for f, k, var in plan.lagged:
            ring = hist[f]
            env[var] = ring[ring.shape[0] - k]
    upd = evaluate(env)
    if feats is None or not plan.rings:
        return upd, new_acc, hist
    if inplace:
        if any(upd is v for v in env.values()):
            upd = upd.clone()  # a bare lagged variable: its ring row is about to be overwritten
        for f, j, slots in plan.rings:
            hist[f][(int(t) - 1) % slots].copy_(feats[:, j])
        return upd, acc, hist
    new_hist = dict(hist)
    for f, j, _ in plan.rings:
        new_hist[f] = torch.cat([hist[f][1:], feats[:, j].unsqueeze(0)], dim=0)
    return upd, new_acc, new_hist


class SymbolicOptimizer(torch.optim.Optimizer):
    """``p <- p + lr * equation(features)``: a distilled (or hand-written) rule as a ``torch.optim`` optimizer.

    Args:
        params: parameters or param groups (each group may set its own ``lr``).
        equation: an :class:`Equation`, or a path / JSON of one.
        lr: multiplier of the equation's update (default 1.0); schedulers act on it.
        feature_spec: override the feature constants (default: ``equation.provenance["feature_spec"]``).
        chunk_size: elements processed per in-place chunk (a speed knob; results agree to float rounding).
        batch_numel: parameters with at most this many elements are stepped together, per param group, device
            and dtype, as one flat tensor (:mod:`harness.symbolic.batched`; their state entries are views of
            flat buffers); 0 steps every parameter on its own. A speed knob: results agree to float rounding.

    Parameters whose ``.grad`` is None are skipped (their state does not tick), as in ``torch.optim``.
    Weight decay, if wanted, belongs in the equation.
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
        #: (param group index, device, dtype) -> flat buckets of that group's small parameters
        self._buckets: dict[tuple[int, torch.device, torch.dtype], BucketSet] = {}
        self._evaluators: dict[
            tuple[torch.device, torch.dtype], Callable[[Mapping[str, Tensor]], Tensor]
        ] = {}

    @classmethod
    def from_file(
        cls, params: Iterable[Any], path: str | Path, lr_mult: float = 1.0, **kwargs: Any
    ) -> SymbolicOptimizer:
        """Build from an equation JSON file; ``lr = lr_mult * kwargs.get("lr", 1.0)``."""
        lr = float(lr_mult) * float(kwargs.pop("lr", 1.0))
        return cls(params, load_equation(Path(path)), lr=lr, **kwargs)

    # -- internals ---------------------------------------------------------------------------------
    def _evaluator(
        self, device: torch.device, dtype: torch.dtype
    ) -> Callable[[Mapping[str, Tensor]], Tensor]:
        """The compiled equation for parameters of this device and dtype (built once)."""
        key = (device, dtype)
        fn = self._evaluators.get(key)
        if fn is None:
            mod = self.equation.compile(dtype=dtype).to(device)
            mod.requires_grad_(False)
            fn = self._evaluators[key] = _fast_evaluator(mod)
        return fn

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        for key in self.plan.accumulators:
            state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        for feature, _, slots in self.plan.rings:
            state[f"hist_{feature}"] = torch.zeros((slots, *p.shape), dtype=p.dtype, device=p.device)

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
                    self._step_param(p, grad, lr)
            for (device, dtype), (ps, gs) in small.items():
                self._step_small(gi, device, dtype, ps, gs, lr)
        return loss

    def _step_small(
        self, gi: int, device: torch.device, dtype: torch.dtype, ps: list[Tensor], gs: list[Tensor], lr: float
    ) -> None:
        """Step small parameters of one group, device and dtype as flat buckets (:mod:`harness.symbolic.batched`)."""
        key = (gi, device, dtype)
        buckets = self._buckets.get(key)
        if buckets is None or not buckets.matches(ps):
            rings = [(f, slots) for f, _, slots in self.plan.rings]
            buckets = self._buckets[key] = BucketSet(ps, self.state, list(self.plan.accumulators), rings)
        plan = self.plan
        evaluate = self._evaluator(device, dtype)

        def update(g: Tensor, acc: Mapping[str, Tensor], hist: Mapping[str, Tensor], t: int) -> Any:
            return symbolic_update(plan, evaluate, g, acc, hist, t, inplace=True)[0]

        buckets.step_(gs, update, lr, self.chunk_size, lambda p, g: self._step_param(p, g, lr))

    def _step_param(self, p: Tensor, grad: Tensor, lr: float) -> None:
        plan = self.plan
        state = self.state[p]
        if not state:
            self._init_state(p, state)
        state["step"] = t = int(state["step"]) + 1
        evaluate = self._evaluator(p.device, p.dtype)
        g = grad.detach().to(p.dtype).contiguous().view(-1)
        n = g.numel()
        direct = p.is_contiguous()
        out = p.view(-1) if direct else torch.zeros(n, dtype=p.dtype, device=p.device)
        accs = {k: state[k].view(-1) for k in plan.accumulators}
        rings = {f: state[f"hist_{f}"].view(slots, -1) for f, _, slots in plan.rings}
        cs = self.chunk_size
        for a in range(0, n, cs):
            b = min(a + cs, n)
            acc = {k: v[a:b] for k, v in accs.items()}
            hist = {f: r[:, a:b] for f, r in rings.items()}
            upd, _, _ = symbolic_update(plan, evaluate, g[a:b], acc, hist, t, inplace=True)
            out[a:b].add_(upd, alpha=lr)
        if not direct:
            p.add_(out.view(p.shape))

    # -- (de)serialisation ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state dict plus the equation's text (checked on load)."""
        sd = super().state_dict()
        sd["equation"] = self.equation.text
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuses state saved for a different equation."""
        sd = dict(state_dict)
        text = sd.pop("equation", None)
        if text is not None and text != self.equation.text:
            raise ValueError(f"optimizer state was saved for equation {text!r}, not {self.equation.text!r}")
        super().load_state_dict(sd)
        self._buckets.clear()
        for s in self.state.values():
            if "step" in s:
                s["step"] = int(s["step"])


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
