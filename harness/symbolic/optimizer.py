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
* for each feature read at a lag ``> 0``, a ring of its past ``max_lag`` values, shaped
  ``[max_lag, *param.shape]`` (lag 0 is computed from the current gradient, so it is never stored). An equation
  over ``g_0, g_3`` keeps ``hist_g`` with 3 slots and nothing else; Adam's equation keeps ``m`` and ``v``. When
  every lagged read of a feature sits inside the same function ``h`` (eq. 6 reads ``m_hat_k`` only as
  ``tanh(m_hat_k/gamma)``), the ring keeps ``h(feature)`` instead, under ``hist_<h>`` (``hist_tanh(m_hat)``,
  ``hist_tanh(g_hat/0.7)``): ``h`` is then evaluated once per step, on lag 0, instead of once per lag read (the
  same values: the ring stores exactly what would be recomputed; a lag not seen yet is ``h(0)``). A state saved
  with ``hist_<feature>`` is converted on load (:class:`RingPlan`, :class:`StepProgram`).

One arithmetic, two drivers (as ``torch.optim.Adam.step`` calls ``adam()``): the features are
:class:`~harness.features.FeatureSpec`'s, the update the equation's. :func:`functional_step` runs
:func:`symbolic_update` without mutation, differentiable w.r.t. the compiled equation's constants, for unrolled
meta-tuning. The stateful :meth:`SymbolicOptimizer.step` runs :func:`program_update` (the same FeatureSpec
arithmetic, in place; the equation through :func:`~harness.symbolic.lowering.inplace_closure`: constants folded,
a weighted sum accumulated into one buffer, functions applied in place to its own temporaries) on cache-sized
chunks of each parameter (no parameter-sized temporaries). Small parameters (``batch_numel``) are stepped
together, per param group, device and dtype, as one flat tensor (:mod:`harness.symbolic.batched`: foreach copies
in and out, one feature update and one equation evaluation for all of them; their state entries are views of
flat buffers, in the per-parameter layout above). With ``compile=True`` each parameter above ``batch_numel`` is
stepped by one ``torch.compile``-d kernel instead (:func:`_fused_step`: the same FeatureSpec arithmetic through
single-feature specs, one pass over memory). The drivers agree up to float rounding. Gradients are inputs
(detached: first-order, as in the L2O literature). Speed against ``torch.optim.Adam(foreach=True)``:
``benchmarks/perf/optimizer_step.py``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sympy
import torch
from torch import Tensor
from torch.func import functional_call

from harness.features import ETA, FeatureSpec, parse_variable
from harness.symbolic.batched import DEFAULT_BATCH_NUMEL, BucketSet
from harness.symbolic.compiled import CompiledEquation
from harness.symbolic.expression import Equation
from harness.symbolic.lowering import FUSED_TORCH_OPS, InplaceFn, Ops, inplace_closure
from harness.symbolic.names import loads_json, read_json_text

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
        """Tensor state keys per parameter (besides ``step``) with rings of the features' own values (the
        functional state's; :meth:`StepProgram.state_keys` gives the stateful optimizer's)."""
        return list(self.accumulators) + [f"hist_{f}" for f, _, _ in self.rings]


Evaluator = Callable[[Mapping[str, Tensor]], Tensor]
"""A compiled equation as ``{variable: tensor} -> update`` (its constants bound)."""


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


# ---------------------------------------------------------------------------------------------------
# the stateful step's program: rings of transformed values, a folded in-place evaluator
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RingPlan:
    """One lag ring of the stateful step.

    Attributes:
        feature: the feature whose past values the ring keeps.
        column: its column in the plan's FeatureSpec.
        slots: ring rows (the largest lag read).
        key: its state key: ``hist_<feature>`` when it keeps the feature's values, ``hist_<h>`` (e.g.
            ``hist_tanh(m_hat)``) when it keeps ``h(feature)``: every lagged read of the feature in the equation
            sits inside the same function ``h`` (a subtree with a function call, e.g. eq. 6's
            ``tanh(m_hat_k/gamma)``), so ``h`` is evaluated once per step, on lag 0, instead of once per lag.
        h: ``h`` as an in-place evaluator reading :attr:`var` (None: the feature itself).
        var: the variable ``h`` reads.
        sym0: the name under which the equation reads ``h(feature_0)`` (None: it does not; the value is
            computed for the ring only).
        reads: ``(lag, name)`` of every lagged read, the name under which the equation reads it.
        fill: the value of a lag not seen yet: ``h(0)`` (0 for the feature itself, as in ``History``).
    """

    feature: str
    column: int
    slots: int
    key: str
    h: InplaceFn | None
    var: str | None
    sym0: str | None
    reads: tuple[tuple[int, str], ...]
    fill: float


@dataclass(frozen=True)
class StepProgram:
    """What the stateful step runs for parameters of one dtype: the plan's features, the rings
    (:class:`RingPlan`) and the equation rewritten over them, as an in-place evaluator
    (:func:`~harness.symbolic.lowering.inplace_closure`: constants folded to floats)."""

    plan: EquationPlan
    evaluate: InplaceFn
    lag0: tuple[tuple[int, str], ...]
    rings: tuple[RingPlan, ...]

    @classmethod
    def build(
        cls, equation: Equation, plan: EquationPlan, dtype: torch.dtype, ops: Ops | None = None
    ) -> StepProgram:
        """The program for parameters of ``dtype``; ``ops`` overrides the evaluators' torch functions
        (:func:`~harness.symbolic.lowering.inplace_closure`)."""
        expr: sympy.Basic = equation.expr
        const_syms = equation.constant_symbols
        const_index = {c: i for i, c in enumerate(const_syms)}
        consts = [torch.tensor(v, dtype=dtype) for v in equation.constants]
        values = {c: float(t) for c, t in zip(const_syms, consts, strict=True)}
        by_name = {
            s.name: s for s in expr.free_symbols if isinstance(s, sympy.Symbol) and s not in const_index
        }
        rings: list[RingPlan] = []
        for feature, column, slots in plan.rings:
            lagged = {by_name[var]: (k, var) for f, k, var in plan.lagged if f == feature}
            reads = tuple(sorted((k, f"__{feature}@{k}") for k, _ in lagged.values()))
            lag0_var = next((var for j, var in plan.lag0 if j == column), None)
            found = _ring_transform(expr, lagged, by_name.get(lag0_var or ""), values)
            if found is None:
                names = {var: f"__{feature}@{k}" for k, var in lagged.values()}
                expr = expr.xreplace({by_name[v]: sympy.Symbol(n, real=True) for v, n in names.items()})
                rings.append(
                    RingPlan(feature, column, slots, f"hist_{feature}", None, None, None, reads, 0.0)
                )
                continue
            rep, rep_var, replace = found
            sub = {node: sympy.Symbol(f"__{feature}@{k}", real=True) for node, k in replace.items()}
            expr = expr.xreplace(sub)
            h = inplace_closure(rep, const_index, consts, ops)
            zero, _ = h({rep_var.name: torch.zeros(1, dtype=dtype)})
            fill = float(zero) if not isinstance(zero, Tensor) else float(zero.reshape(-1)[0])
            shown = dict(zip(const_syms, equation.constants, strict=True))
            key = f"hist_{_display(rep, rep_var, feature, shown)}"
            sym0 = f"__{feature}@0" if 0 in replace.values() else None
            rings.append(RingPlan(feature, column, slots, key, h, rep_var.name, sym0, reads, fill))
        left = {s.name for s in expr.free_symbols if isinstance(s, sympy.Symbol)}
        lag0 = tuple((j, var) for j, var in plan.lag0 if var in left)
        return cls(plan, inplace_closure(expr, const_index, consts, ops), lag0, tuple(rings))

    def state_keys(self) -> list[str]:
        """Tensor state keys per parameter (besides ``step``)."""
        return list(self.plan.accumulators) + [r.key for r in self.rings]


def _ring_transform(
    expr: sympy.Basic,
    lagged: Mapping[sympy.Symbol, tuple[int, str]],
    lag0: sympy.Symbol | None,
    values: Mapping[sympy.Symbol, float],
) -> tuple[sympy.Basic, sympy.Symbol, dict[sympy.Basic, int]] | None:
    """The function ``h`` that every lagged read of one feature (``lagged``: symbol -> (lag, name)) sits inside,
    as ``(representative subtree, its variable, {subtree: lag} to replace)``; None when there is none worth
    caching (no function call in it) or the reads sit in different contexts.

    Subtrees are compared as functions of their one variable with constants by value (so the eq. 6 terms
    ``tanh(m_hat_1/c5)`` and ``tanh(m_hat_0/c0)`` match when ``c5 == c0``); the largest common one is taken,
    but never one with a constant factor on top (``w*tanh(x)`` keeps ``w`` in the sum: its ``tanh(x)`` is
    cached). Lag-0 subtrees of the same function are replaced too, so ``h(feature_0)`` is computed once.
    """
    consts = set(values)

    def canon(e: sympy.Basic, var: sympy.Symbol) -> str:
        if e == var:
            return "X"
        if e in consts:
            return repr(values[e])  # type: ignore[index]
        if not e.args:
            return sympy.srepr(e)
        args = [canon(a, var) for a in e.args]
        if isinstance(e, (sympy.Add, sympy.Mul)):
            args.sort()
        return f"{type(e).__name__}({','.join(args)})"

    def alone(e: sympy.Basic, var: sympy.Symbol) -> bool:
        return (e.free_symbols - consts) == {var}

    def costly(e: sympy.Basic) -> bool:
        return any(
            isinstance(n, sympy.Function)
            or (isinstance(n, sympy.Pow) and not isinstance(n.exp, sympy.Integer))
            for n in sympy.preorder_traversal(e)
        )

    def scaled(e: sympy.Basic) -> bool:
        return isinstance(e, sympy.Mul) and any(not (a.free_symbols - consts) for a in e.args)

    chains: list[tuple[sympy.Symbol, list[sympy.Basic]]] = []  # per occurrence: ancestors, bottom-up

    def walk(e: sympy.Basic, path: list[sympy.Basic]) -> None:
        if e in lagged:
            chain = []
            for anc in reversed(path):
                if not alone(anc, e):  # type: ignore[arg-type]
                    break
                chain.append(anc)
            chains.append((e, chain))  # type: ignore[arg-type]
            return
        for a in e.args:
            walk(a, [*path, e])

    walk(expr, [])
    if not chains:
        return None
    first_var, first_chain = chains[0]
    for cand in reversed(first_chain):
        if scaled(cand) or not costly(cand):
            continue
        form = canon(cand, first_var)
        replace: dict[sympy.Basic, int] = {}
        for var, chain in chains:
            node = next((n for n in chain if canon(n, var) == form), None)
            if node is None:
                break
            replace[node] = lagged[var][0]
        else:
            rep, rep_var = cand, first_var
            if lag0 is not None:
                for node in sympy.preorder_traversal(expr):
                    if alone(node, lag0) and canon(node, lag0) == form:
                        replace[node] = 0
                        rep, rep_var = node, lag0
            rewritten = expr.xreplace({n: sympy.Dummy() for n in replace})
            if not (rewritten.free_symbols & set(lagged)):
                return rep, rep_var, replace
    return None


def _display(rep: sympy.Basic, var: sympy.Symbol, feature: str, values: Mapping[sympy.Symbol, float]) -> str:
    """``rep`` as text over ``feature``, constants by value (``tanh(m_hat)``, ``tanh(g_hat/0.7)``)."""

    def num(v: float) -> sympy.Expr:
        if math.isfinite(v) and v == int(v):
            return sympy.Integer(int(v))
        return sympy.Symbol(f"{v:.6g}", positive=v > 0)

    sub: dict[sympy.Basic, sympy.Basic] = {c: num(v) for c, v in values.items()}
    sub[var] = sympy.Symbol(feature)
    return sympy.sstr(rep.xreplace(sub)).replace(" ", "")


def program_update(
    program: StepProgram, g: Tensor, acc: Mapping[str, Tensor], hist: Mapping[str, Tensor], t: int
) -> Any:
    """The stateful step's arithmetic on flat coordinates, in place: fold ``g`` (the ``t``-th gradient) into
    ``acc`` (:meth:`FeatureSpec.update_`), read each ring's lags (lag ``k`` at row ``(t - 1 - k) % slots``),
    evaluate the equation, write this step's value over the oldest row; return the update (a tensor, or a
    float for an equation without variables), not yet multiplied by the learning rate."""
    spec = program.plan.spec
    env: dict[str, Tensor] = {}
    feats = spec.update_(acc, g, float(t)) if spec is not None else None
    for j, var in program.lag0:
        env[var] = feats[:, j]  # type: ignore[index]
    if not program.rings:
        return program.evaluate(env)[0]
    writes: list[tuple[Tensor, Tensor]] = []
    for r in program.rings:
        col = feats[:, r.column]  # type: ignore[index]
        if r.h is None:
            val = col
        else:  # h on a contiguous copy: tanh & co. on a strided column cost more than the copy
            val = r.h({r.var: col.contiguous()})[0]  # type: ignore[dict-item]
        if r.sym0 is not None:
            env[r.sym0] = val
        ring = hist[r.key]
        for k, name in r.reads:
            env[name] = ring[(t - 1 - k) % r.slots]
        writes.append((ring[(t - 1) % r.slots], val))
    upd, owned = program.evaluate(env)
    if not owned and isinstance(upd, Tensor):
        upd = upd.clone()  # a bare lagged variable: its ring row is about to be overwritten
    for row, val in writes:
        row.copy_(val)
    return upd


class _Powers:
    """What the compiled step hands :meth:`FeatureSpec.advance` as ``t``: FeatureSpec's bias corrections read
    ``t`` only as ``beta**t``, which this answers from ``beta**t`` computed in Python (as the eager step does, in
    double precision) and passed in as 0-dim tensors. With ``t`` itself a tensor, ``pow(beta, t)`` would be
    evaluated in the kernel's loop, once per vector of coordinates."""

    __slots__ = ("powers",)

    def __init__(self, powers: dict[float, Tensor]) -> None:
        self.powers = powers

    def __rpow__(self, beta: float) -> Tensor:
        return self.powers[beta]


def _betas(plan: EquationPlan) -> tuple[float, ...]:
    """The EMA rates whose bias correction ``1 - beta**t`` the plan's features read."""
    return tuple(sorted({beta for _, beta in plan.accumulators.values()}))


def _fused_step(program: StepProgram) -> Callable[..., None]:
    """The whole stateful step of one parameter as one function for ``torch.compile``:
    ``fused(out, g, acc, reads, rw, powers, lr)`` adds ``lr * update`` to ``out`` and updates ``acc`` and the
    rings.

    The same FeatureSpec arithmetic through :meth:`FeatureSpec.advance`, one single-feature spec per column
    (so no ``[n, F]`` stack is materialised: the compiled kernel is one loop), and the program's evaluators.
    ``reads[name]`` is the ring row of each lag read below the ring's slot count, ``rw[i]`` ring ``i``'s row of
    lag ``slots``: read, then overwritten with this step's value. ``powers`` (float64) holds ``beta**t`` for
    :func:`_betas` (:class:`_Powers`) and ``lr`` is a 0-dim float64 tensor (Python floats would make a graph per
    value). A fresh code object per program: dynamo's cache (and its recompile limit) is per code object.
    """
    spec = program.plan.spec
    accs = program.plan.accumulators
    betas = _betas(program.plan)
    subs: list[tuple[int, FeatureSpec, tuple[str, ...]]] = []
    if spec is not None:
        for j, name in enumerate(spec.names):
            one = dataclasses.replace(
                spec, names=(name,), eta_params=spec.eta_params if name == ETA else None
            )
            subs.append((j, one, tuple(k for k in one.accumulators() if k in accs)))
    lag0 = program.lag0
    ring_plans = program.rings
    evaluate = program.evaluate

    def fused(
        out: Tensor,
        g: Tensor,
        acc: dict[str, Tensor],
        reads: dict[str, Tensor],
        rw: list[Tensor],
        powers: Tensor,
        lr: Tensor,
    ) -> None:
        t = _Powers({beta: powers[i] for i, beta in enumerate(betas)})
        cols: dict[int, Tensor] = {}
        new_acc: dict[str, Tensor] = {}
        for j, one, keys in subs:
            f, new = one.advance({k: acc[k] for k in keys}, g, t)  # type: ignore[arg-type]
            cols[j] = f[:, 0]
            new_acc.update(new)
        env: dict[str, Tensor] = {var: cols[j] for j, var in lag0}
        vals: list[Tensor] = []
        for row, r in zip(rw, ring_plans, strict=True):
            col = cols[r.column]
            val = r.h({r.var: col})[0] if r.h is not None else col  # type: ignore[dict-item]
            if r.sym0 is not None:
                env[r.sym0] = val
            env[r.reads[-1][1]] = row  # the largest lag, ``slots``: the row about to be overwritten
            vals.append(val)
        env.update(reads)
        upd = evaluate(env)[0]
        for row, val in zip(rw, vals, strict=True):
            row.copy_(val)
        for k, v in new_acc.items():
            acc[k].copy_(v)
        out.add_(upd * lr)

    code = fused.__code__.replace()
    return types.FunctionType(code, fused.__globals__, "fused_symbolic_step", None, fused.__closure__)


def _plain(x: Tensor) -> Tensor:
    """``x``'s memory as a tensor of its own (storage offset 0, no view base), through DLPack: what the compiled
    step is given, so dynamo guards neither on view bases nor on storage offsets (which change with the ring
    row) and one graph serves every parameter and step."""
    return torch.from_dlpack(x.detach())


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
        compile: step each parameter above ``batch_numel`` with one ``torch.compile``-d kernel (features,
            equation, rings and the parameter update in one pass over memory) instead of the chunked eager
            ops. Opt-in: the first step pays the compilation (seconds; :attr:`compile_seconds` adds it up),
            CPU needs a C++ compiler. If compiling fails the optimizer warns once and steps eagerly. Results
            agree to float rounding.

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
        """Step small parameters of one group, device and dtype as flat buckets (:mod:`harness.symbolic.batched`)."""
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
            ops = FUSED_TORCH_OPS if out.dtype == torch.float32 else None
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
