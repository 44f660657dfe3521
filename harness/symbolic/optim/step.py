"""The arithmetic of one symbolic step, for :class:`~harness.symbolic.optim.optimizer.SymbolicOptimizer` and
its functional twin: what an equation reads (:class:`EquationPlan`, shared by both), the functional step
(:func:`symbolic_update`), the stateful step's ring programs that store ``h(feature)`` once per step
(:class:`StepProgram`, :func:`program_update`) and its opt-in compiled kernel (``compile=True``).
:mod:`harness.symbolic.optim.optimizer` re-exports the public names.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch import Tensor

from harness.features import ETA, FeatureSpec, parse_variable
from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.lowering import Ops
from harness.symbolic.lang.torch_ops import FUSED_TORCH_OPS, TORCH_OPS, InplaceFn, inplace_closure
from harness.symbolic.optim.eager import EAGER_OPS, LinearForm, into_form, linear_form


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
    """One symbolic step on flat coordinates with a compiled equation: the functional API's arithmetic.

    :func:`~harness.symbolic.optim.optimizer.functional_step` runs it without mutation (differentiable);
    ``inplace=True`` is a stateful variant (:meth:`FeatureSpec.update_`, ``hist`` as rings with lag ``k`` at
    row ``(t - 1 - k) % slots``) that :class:`~harness.symbolic.optim.optimizer.SymbolicOptimizer` does not
    use: it runs :func:`program_update`. Without ``inplace`` nothing is mutated (:meth:`FeatureSpec.advance`)
    and ``hist[f]`` (``[slots, n]``) is ordered oldest first (lag ``k`` at row ``slots - k``) and shifted.
    ``evaluate`` is ``{variable: tensor} -> update``; ``t`` counts gradients including ``g``;
    ``feature_params`` overrides ``eta``'s parameters (a tensor gradients may flow into). Returns
    ``(update, accumulators, hist)`` after this step, the update not yet multiplied by the learning rate.
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
        key: its state key: ``hist_<feature>``, or ``hist_<h>`` (``hist_tanh(m_hat)``) when every lagged read
            sits inside the same function ``h`` and the ring keeps ``h(feature)``, computed once per step.
        h: ``h`` as an in-place evaluator reading :attr:`var` (None: the feature itself).
        var: the variable ``h`` reads.
        sym0: the name under which the equation reads ``h(feature_0)`` (None: it does not).
        reads: ``(lag, name)`` of every lagged read, the name under which the equation reads it.
        fill: the value of a lag not seen yet: ``h(0)`` (0 for the feature itself, as in ``History``).
        into: ``h`` as ``(c, F)``: ``F(c * var)``, written straight into a ring row (:func:`into_form`).
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
    into: tuple[float, Callable[[Tensor, Tensor], Tensor]] | None = None


@dataclass(frozen=True)
class StepProgram:
    """What the stateful step runs for parameters of one dtype: the plan's features, the rings
    (:class:`RingPlan`) and the equation rewritten over them, as an in-place evaluator
    (:func:`~harness.symbolic.lang.lowering.inplace_closure`: constants folded to floats); ``linear`` is the
    rewritten equation as a weighted sum (:class:`~harness.symbolic.optim.eager.LinearForm`, eq. 6's shape) when it
    is one and the program has rings (:func:`program_update` then runs :func:`_linear_update`)."""

    plan: EquationPlan
    evaluate: InplaceFn
    lag0: tuple[tuple[int, str], ...]
    rings: tuple[RingPlan, ...]
    linear: LinearForm | None = None

    @classmethod
    def build(
        cls, equation: Equation, plan: EquationPlan, dtype: torch.dtype, ops: Ops | None = None
    ) -> StepProgram:
        """The program for parameters of ``dtype``; ``ops`` overrides the evaluators' torch functions
        (:func:`~harness.symbolic.lang.lowering.inplace_closure`; default :data:`EAGER_OPS`)."""
        ops = EAGER_OPS if ops is None else ops
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
            into = into_form(rep, rep_var, const_index, consts) if ops is EAGER_OPS else None
            rings.append(RingPlan(feature, column, slots, key, h, rep_var.name, sym0, reads, fill, into))
        left = {s.name for s in expr.free_symbols if isinstance(s, sympy.Symbol)}
        lag0 = tuple((j, var) for j, var in plan.lag0 if var in left)
        linear = linear_form(expr, const_index, consts) if rings and ops is EAGER_OPS else None
        return cls(plan, inplace_closure(expr, const_index, consts, ops), lag0, tuple(rings), linear)

    def state_keys(self) -> list[str]:
        """Tensor state keys per parameter (besides ``step``)."""
        return list(self.plan.accumulators) + [r.key for r in self.rings]


class ProgramCache:
    """The stateful step's programs of one equation, per parameter dtype, built on first use: the eager
    :class:`StepProgram` (:data:`EAGER_OPS`) and the :class:`FusedCore` that ``compile=True`` and a traced step
    run (:data:`FUSED_TORCH_OPS` for float32, else :data:`TORCH_OPS`). Building walks sympy trees, so the
    optimizer builds what a step needs before the step runs (never inside a region ``torch.compile`` traces).
    """

    def __init__(self, equation: Equation, plan: EquationPlan) -> None:
        self.equation = equation
        self.plan = plan
        self.programs: dict[torch.dtype, StepProgram] = {}
        self.cores: dict[torch.dtype, FusedCore] = {}

    def eager(self, dtype: torch.dtype) -> StepProgram:
        """The eager program for parameters of ``dtype`` (constants in that dtype)."""
        prog = self.programs.get(dtype)
        if prog is None:
            prog = self.programs[dtype] = StepProgram.build(self.equation, self.plan, dtype)
        return prog

    def core(self, dtype: torch.dtype) -> FusedCore:
        """The pure-tensor step for parameters of ``dtype`` (``compile=True`` and traced steps)."""
        core = self.cores.get(dtype)
        if core is None:
            ops = FUSED_TORCH_OPS if dtype == torch.float32 else TORCH_OPS
            core = self.cores[dtype] = FusedCore(StepProgram.build(self.equation, self.plan, dtype, ops))
        return core


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
    cols = spec.update_columns_(acc, g, float(t)) if spec is not None else []
    if program.linear is not None:
        return _linear_update(program, program.linear, cols, hist, t)
    env: dict[str, Tensor] = {var: cols[j] for j, var in program.lag0}
    if not program.rings:
        return program.evaluate(env)[0]
    writes: list[tuple[Tensor, Tensor]] = []
    for r in program.rings:
        col = cols[r.column]
        val = col if r.h is None else r.h({r.var: col})[0]  # type: ignore[dict-item]
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


def _linear_update(
    program: StepProgram, form: LinearForm, cols: list[Tensor], hist: Mapping[str, Tensor], t: int
) -> Tensor:
    """:func:`program_update`'s equation and ring writes for a linear program: the terms on ring rows of lag
    ``>= 1`` summed first (one of them may be the row about to be overwritten), then each ring's newest value
    written over its oldest row (straight in, when ``h`` has an :attr:`RingPlan.into` form), then the lag-0
    terms, read from those rows and from the feature columns."""
    rows: dict[str, Tensor] = {}
    for r in program.rings:
        ring = hist[r.key]
        for k, name in r.reads:
            rows[name] = ring[(t - 1 - k) % r.slots]
    out: Tensor | None = None
    for c, name in form.terms:
        row = rows.get(name)
        if row is not None:
            out = torch.mul(row, c) if out is None else out.add_(row, alpha=c)
    fresh: dict[str, Tensor] = {var: cols[j] for j, var in program.lag0}
    for r in program.rings:
        row, col = hist[r.key][(t - 1) % r.slots], cols[r.column]
        if r.into is not None:
            c, fn = r.into
            fn(col if c == 1.0 else torch.mul(col, c, out=row), row)
        else:
            row.copy_(col if r.h is None else r.h({r.var: col})[0])  # type: ignore[dict-item]
        if r.sym0 is not None:
            fresh[r.sym0] = row
    for c, name in form.terms:
        val = fresh.get(name)
        if val is not None:
            out = torch.mul(val, c) if out is None else out.add_(val, alpha=c)
    assert out is not None  # a linear form has a variable
    return out.add_(form.const) if form.const != 0.0 else out


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


def bias_betas(plan: EquationPlan) -> tuple[float, ...]:
    """The EMA rates whose bias correction ``1 - beta**t`` the plan's features read."""
    return tuple(sorted({beta for _, beta in plan.accumulators.values()}))


class FusedCore:
    """One parameter's step as pure tensor code, nothing written: ``core(g, acc, powers, reads)`` returns
    ``(update, ring values, new accumulators)``.

    The same FeatureSpec arithmetic through :meth:`FeatureSpec.advance`, one single-feature spec per column
    (so no ``[n, F]`` stack is materialised: a compiled kernel is one loop), and the program's evaluators.
    ``powers`` (float64) holds ``beta**t`` for :func:`bias_betas` (:class:`_Powers`); ``reads[name]`` is the
    ring row of every lagged read (lag ``slots`` included: the row this step overwrites). Built once per
    program, outside any traced region (:func:`fused_step`, :func:`traced_update`).
    """

    def __init__(self, program: StepProgram) -> None:
        spec = program.plan.spec
        accs = program.plan.accumulators
        self.program = program
        self.betas = bias_betas(program.plan)
        self.subs: list[tuple[int, FeatureSpec, tuple[str, ...]]] = []
        if spec is not None:
            for j, name in enumerate(spec.names):
                one = dataclasses.replace(
                    spec, names=(name,), eta_params=spec.eta_params if name == ETA else None
                )
                self.subs.append((j, one, tuple(k for k in one.accumulators() if k in accs)))

    def __call__(
        self, g: Tensor, acc: Mapping[str, Tensor], powers: Tensor, reads: Mapping[str, Tensor]
    ) -> tuple[Tensor, list[Tensor], dict[str, Tensor]]:
        program = self.program
        t = _Powers({beta: powers[i] for i, beta in enumerate(self.betas)})
        cols: dict[int, Tensor] = {}
        new_acc: dict[str, Tensor] = {}
        for j, one, keys in self.subs:
            f, new = one.advance({k: acc[k] for k in keys}, g, t)  # type: ignore[arg-type]
            cols[j] = f[:, 0]
            new_acc.update(new)
        env: dict[str, Tensor] = {var: cols[j] for j, var in program.lag0}
        vals: list[Tensor] = []
        for r in program.rings:
            col = cols[r.column]
            val = r.h({r.var: col})[0] if r.h is not None else col  # type: ignore[dict-item]
            if r.sym0 is not None:
                env[r.sym0] = val
            vals.append(val)
        env.update(reads)
        upd = program.evaluate(env)[0]
        if not isinstance(upd, Tensor):
            upd = torch.full_like(g, float(upd))
        return upd, vals, new_acc


def fused_step(program: StepProgram) -> Callable[..., None]:
    """The whole stateful step of one parameter as one function for ``torch.compile`` (``compile=True``):
    ``fused(out, g, acc, reads, rw, powers, lr)`` adds ``lr * update`` to ``out`` and updates ``acc`` and the
    rings (:class:`FusedCore`).

    ``reads[name]`` is the ring row of each lag read below the ring's slot count, ``rw[i]`` ring ``i``'s row of
    lag ``slots``: read, then overwritten with this step's value; ``lr`` is a 0-dim float64 tensor (Python
    floats would make a graph per value). A fresh code object per program: dynamo's cache (and its recompile
    limit) is per code object.
    """
    core = FusedCore(program)
    ring_plans = program.rings

    def fused(
        out: Tensor,
        g: Tensor,
        acc: dict[str, Tensor],
        reads: dict[str, Tensor],
        rw: list[Tensor],
        powers: Tensor,
        lr: Tensor,
    ) -> None:
        rows = dict(reads)
        for row, r in zip(rw, ring_plans, strict=True):
            rows[r.reads[-1][1]] = row  # the largest lag, ``slots``: the row about to be overwritten
        upd, vals, new_acc = core(g, acc, powers, rows)
        for row, val in zip(rw, vals, strict=True):
            row.copy_(val)
        for k, v in new_acc.items():
            acc[k].copy_(v)
        out.add_(upd * lr)

    code = fused.__code__.replace()
    return types.FunctionType(code, fused.__globals__, "fused_symbolic_step", None, fused.__closure__)


def traced_update(
    core: FusedCore,
    param: Tensor,
    grad: Tensor,
    state: Mapping[str, Tensor],
    lr: float | Tensor,
) -> None:
    """One parameter's step with every step-dependent value a tensor, for a step traced by ``torch.compile``:
    ``state["step"]`` (a 0-dim tensor, already counting ``grad``) gives the bias corrections (``beta**t`` as
    tensors) and the ring rows (``index_select`` / ``index_copy_`` at ``(t - 1 - k) % slots``), so nothing is
    guarded on the step count. The same arithmetic and state layout as :func:`program_update`."""
    program = core.program
    step = state["step"].to(torch.float64)
    g = grad.reshape(-1).to(param.dtype)
    acc = {k: state[k].view(-1) for k in program.plan.accumulators}
    base = torch.tensor(core.betas, dtype=torch.float64, device=step.device) if core.betas else None
    powers = torch.pow(base, step) if base is not None else step.reshape(1)
    reads: dict[str, Tensor] = {}
    writes: list[tuple[Tensor, Tensor]] = []
    for r in program.rings:
        ring = state[r.key].view(r.slots, -1)
        for k, name in r.reads:
            idx = torch.remainder(step - 1 - k, r.slots).to(torch.long).reshape(1)
            reads[name] = ring.index_select(0, idx)[0]
        writes.append((ring, torch.remainder(step - 1, r.slots).to(torch.long).reshape(1)))
    upd, vals, new_acc = core(g, acc, powers.to(param.device), reads)
    for (ring, idx), val in zip(writes, vals, strict=True):
        ring.index_copy_(0, idx, val.reshape(1, -1).to(ring.dtype))
    for k, v in new_acc.items():
        acc[k].copy_(v)
    param.add_((upd * lr).reshape(param.shape).to(param.dtype))


def plain_view(x: Tensor) -> Tensor:
    """``x``'s memory as a tensor of its own (storage offset 0, no view base), through DLPack: what the compiled
    step is given, so dynamo guards neither on view bases nor on storage offsets (which change with the ring
    row) and one graph serves every parameter and step."""
    return torch.from_dlpack(x.detach())
