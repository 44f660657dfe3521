"""pyoperon (C++ Operon) symbolic regression backend: the embedded default, no Julia needed.

A multi-objective search (``r2``, ``length``) whose front models are converted TREE by tree, never through
pyoperon's printed strings (they round small constants to zero), then go through
:func:`harness.symbolic.sr.offset.remove_offset` unless ``allow_offset``. ``cube asinh relu erfc sign`` are
not available (ValueError); ``sqrt``/``pow`` map to ``sqrtabs``/``powabs``. ``settings.extra`` goes to
``pyoperon.sklearn.SymbolicRegressor``. pyoperon's traps, the operator mapping and the per-generation
progress hook: ``docs/symbolic.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import queue
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import sympy

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.functions import expr_args, spow, ssqrt
from harness.symbolic.lang.names import MAX_FRONT_EQUATIONS, var_symbol
from harness.symbolic.sr.base import SRSettings, check_fit_inputs, finish_front
from harness.symbolic.sr.offset import remove_offset

__all__ = ["OPERON_MISSING", "OPERON_SYMBOLS", "OperonBackend", "operon_symbols", "tree_to_equation"]

OPERON_SYMBOLS: dict[str, str] = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "square": "square",
    "sqrt": "sqrtabs",
    "pow": "powabs",
    "exp": "exp",
    "log": "log",
    "tanh": "tanh",
    "sinh": "sinh",
    "cos": "cos",
    "sin": "sin",
    "abs": "abs",
}
"""Our operator name -> the pyoperon ``allowed_symbols`` entry used for it."""

OPERON_MISSING: frozenset[str] = frozenset({"cube", "asinh", "relu", "erfc", "sign"})
"""Operators of our grammar that pyoperon does not have."""

_OUR_KEYS = {
    "allowed_symbols",
    "objectives",
    "optimizer_iterations",
    "population_size",
    "pool_size",
    "generations",
    "max_length",
    "n_threads",
    "random_state",
    "max_time",
}


def operon_symbols(operators: Sequence[str]) -> str:
    """pyoperon ``allowed_symbols`` for our operator names; ValueError naming any Operon lacks."""
    missing = [o for o in operators if o in OPERON_MISSING or o not in OPERON_SYMBOLS]
    if missing:
        raise ValueError(
            f"the operon backend cannot use operator(s) {', '.join(missing)}: pyoperon has no "
            f"{'/'.join(missing)}; remove them or use the pysr backend. "
            f"Operon-supported operators: {', '.join(OPERON_SYMBOLS)}"
        )
    symbols = [OPERON_SYMBOLS[o] for o in operators]
    return ",".join(dict.fromkeys(symbols + ["constant", "variable"]))


def _f32(v: float) -> float:
    """Shortest decimal that round-trips the float32 ``v`` (Operon stores float32)."""
    return float(str(np.float32(v)))


def tree_to_equation(tree: Any, names_by_hash: Mapping[int, str]) -> Equation:
    """Convert a pyoperon ``Tree`` to an Equation (node semantics: ``docs/symbolic.md``, Operon).

    Args:
        tree: ``pyoperon.Tree`` (e.g. ``SymbolicRegressor.pareto_front_[i]['tree']``).
        names_by_hash: variable hash -> our variable name.
    """
    op = importlib.import_module("pyoperon")  # compiled module without type information
    T = op.NodeType
    nodes = list(tree.Nodes)
    values: dict[sympy.Symbol, float] = {}

    def const(v: float) -> sympy.Symbol:
        s = sympy.Symbol(f"_o{len(values)}", real=True)
        values[s] = _f32(v)
        return s

    def build(i: int) -> sympy.Expr:
        n = nodes[i]
        if n.IsConstant:
            return const(n.Value)
        if n.IsVariable:
            try:
                x = var_symbol(names_by_hash[n.HashValue])
            except KeyError:
                raise ValueError(f"operon tree has an unknown variable hash {n.HashValue}") from None
            w = _f32(n.Value)
            return x if w == 1.0 else const(w) * x
        args: list[sympy.Expr] = []
        j = i - 1
        for _ in range(n.Arity):
            args.append(build(j))
            j -= nodes[j].Length + 1
        t = n.Type
        if t == T.Add:
            return sympy.Add(*args)
        if t == T.Mul:
            return sympy.Mul(*args)
        if t == T.Sub:
            return -args[0] if len(args) == 1 else args[0] - sympy.Add(*args[1:])
        if t == T.Div:
            return 1 / args[0] if len(args) == 1 else args[0] / sympy.Mul(*args[1:])
        (a, *rest) = args
        unary = {
            T.Square: lambda: a**2,
            T.Sqrt: lambda: sympy.Pow(a, sympy.Rational(1, 2)),
            T.Sqrtabs: lambda: ssqrt(sympy.Abs(a)),
            T.Cbrt: lambda: spow(a, sympy.Rational(1, 3)),
            T.Exp: lambda: sympy.exp(a),
            T.Log: lambda: sympy.log(a),
            T.Logabs: lambda: sympy.log(sympy.Abs(a)),
            T.Tanh: lambda: sympy.tanh(a),
            T.Sinh: lambda: sympy.sinh(a),
            T.Cos: lambda: sympy.cos(a),
            T.Sin: lambda: sympy.sin(a),
            T.Abs: lambda: sympy.Abs(a),
        }
        if t in unary and not rest:
            return unary[t]()
        if len(rest) == 1:
            (b,) = rest
            if t == T.Pow:
                return sympy.Pow(a, b)
            if t == T.Powabs:
                return spow(sympy.Abs(a), b)
            if t == T.Aq:
                return a / sympy.Pow(1 + b**2, sympy.Rational(1, 2))
        raise ValueError(f"operon node {n.Name!r} (arity {n.Arity}) is not supported by the converter")

    expr = build(len(nodes) - 1)
    return Equation(expr, values)


def _drop_tiny_offset(eq: Equation, scale: float) -> Equation:
    """Remove a top-level additive constant whose magnitude is below ``scale`` (linear-scaling noise)."""
    syms = eq.constant_symbols
    terms = sympy.Add.make_args(eq.expr)
    keep = [t for t in terms if not (t in syms and abs(eq.constants[syms.index(t)]) < scale)]
    if len(keep) == len(terms) or not keep:
        return eq
    values = {s: v for s, v in zip(syms, eq.constants, strict=True)}
    new = sympy.Add(*keep)
    return Equation(
        new,
        {s: values[s] for s in new.free_symbols if isinstance(s, sympy.Symbol) and s in values},
        metrics=eq.metrics,
        provenance=eq.provenance,
    )


def _drop_unit_factors(eq: Equation) -> Equation:
    """Remove multiplicative constants equal to exactly 1.0 (the linear scale when it rounds to 1)."""
    syms = eq.constant_symbols
    ones = {s for s, v in zip(syms, eq.constants, strict=True) if v == 1.0}
    if not ones:
        return eq

    def go(e: sympy.Expr) -> sympy.Expr:
        if not e.args:
            return e
        args = [go(a) for a in expr_args(e)]
        if isinstance(e, sympy.Mul):
            kept = [a for a in args if a not in ones]
            args = kept if kept else [sympy.Integer(1)]
        return e.func(*args)

    new = go(eq.expr)
    values = dict(zip(syms, eq.constants, strict=True))
    return Equation(
        new,
        {s: values[s] for s in new.free_symbols if isinstance(s, sympy.Symbol) and s in values},
        metrics=eq.metrics,
        provenance=eq.provenance,
    )


# ---------------------------------------------------------------------------------------------------
# per-generation progress out of SymbolicRegressor.fit (see ``docs/symbolic.md``, Operon)
# ---------------------------------------------------------------------------------------------------
#: the per-generation report of the fit running on this thread (the thread that builds the algorithm)
_REPORT = threading.local()
_HOOK_LOCK = threading.Lock()
_HOOK_STATE: dict[str, Any] = {"users": 0, "saved": None}


def _reporting_algorithm(base: type) -> type:
    """A subclass of Operon's algorithm class ``base`` whose ``Run`` passes Operon a per-generation callback
    when the thread that built it had a report set (:data:`_REPORT`); otherwise it is ``base``."""

    class Reporting(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._sl2o_report = getattr(_REPORT, "report", None)

        def Run(self, rng: Any, callback: Any = None, threads: int = 0, warm_start: bool = False) -> Any:
            report = self._sl2o_report
            if report is None or callback is not None:
                return super().Run(rng, callback, threads, warm_start)

            def each_generation() -> None:
                try:  # never raise into Operon's C++ loop
                    best = -min(ind.GetFitness(0) for ind in self.Individuals)
                    report(int(self.Generation), float(best))
                except Exception:  # noqa: BLE001 - a progress report is a nicety
                    pass

            return super().Run(rng, each_generation, threads, warm_start)

    Reporting.__name__ = Reporting.__qualname__ = f"Reporting{base.__name__}"
    return Reporting


@contextlib.contextmanager
def _generation_hook() -> Iterator[None]:
    """While inside, ``pyoperon.sklearn`` builds its algorithms from :func:`_reporting_algorithm` classes (a
    stand-in ``op`` module; everything else is pyoperon's own); the last fit to leave restores it."""
    sk = importlib.import_module("pyoperon.sklearn")
    with _HOOK_LOCK:
        if _HOOK_STATE["users"] == 0:
            real = sk.op
            stand_in = types.ModuleType(real.__name__, real.__doc__)
            stand_in.__dict__.update(real.__dict__)
            for name in ("NSGA2Algorithm", "GeneticProgrammingAlgorithm"):
                if hasattr(real, name):
                    setattr(stand_in, name, _reporting_algorithm(getattr(real, name)))
            _HOOK_STATE["saved"] = real
            setattr(sk, "op", stand_in)  # noqa: B010 - a module attribute pyright does not know
        _HOOK_STATE["users"] += 1
    try:
        yield
    finally:
        with _HOOK_LOCK:
            _HOOK_STATE["users"] -= 1
            if _HOOK_STATE["users"] == 0:
                setattr(sk, "op", _HOOK_STATE["saved"])  # noqa: B010
                _HOOK_STATE["saved"] = None


def fit_reporting(
    reg: Any, X: np.ndarray, y: np.ndarray, on_generation: Callable[[int, float], None]
) -> None:
    """``reg.fit(X, y)`` (a ``SymbolicRegressor``), calling ``on_generation(generation, best_r2)`` on THIS
    thread after each generation while it runs: ``best_r2`` is the best R² of the search so far (its own
    fitness, on the data it fits). The fit runs on a helper thread; its exception is raised here. An
    exception of ``on_generation`` stops the reports (with a warning), not the fit."""
    points: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    failed: list[BaseException] = []
    best = [-math.inf]

    def report(generation: int, r2: float) -> None:
        best[0] = max(best[0], r2) if math.isfinite(r2) else best[0]
        points.put((generation, best[0] if math.isfinite(best[0]) else math.nan))

    def work() -> None:
        _REPORT.report = report
        try:
            with _generation_hook():
                reg.fit(X, y)
        except BaseException as exc:  # noqa: BLE001 - raised again on the calling thread
            failed.append(exc)
        finally:
            _REPORT.report = None
            points.put(None)

    thread = threading.Thread(target=work, name="operon-fit", daemon=True)
    thread.start()
    reporting = True
    while (item := points.get()) is not None:
        if not reporting:
            continue
        try:
            on_generation(*item)
        except Exception as exc:  # noqa: BLE001 - progress must not break the fit
            reporting = False
            warnings.warn(
                f"operon: per-generation progress stopped ({type(exc).__name__}: {exc})", stacklevel=2
            )
    thread.join()
    if failed:
        raise failed[0]


class OperonBackend:
    """Multi-objective (R², length) genetic programming with pyoperon; see ``docs/symbolic.md``."""

    name = "operon"

    def available(self) -> tuple[bool, str]:
        try:
            importlib.import_module("pyoperon.sklearn")
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
            return False, f"pyoperon cannot be imported ({type(exc).__name__}: {exc}); pip install pyoperon"
        return True, ""

    def regressor_kwargs(self, settings: SRSettings) -> dict[str, Any]:
        """Keyword arguments for ``pyoperon.sklearn.SymbolicRegressor`` from our settings."""
        kw: dict[str, Any] = {
            "allowed_symbols": operon_symbols(settings.operators),
            "objectives": ["r2", "length"],
            "optimizer_iterations": settings.optimizer_iterations,
            "population_size": settings.population_size,
            "pool_size": settings.population_size,
            "generations": settings.iterations,
            "max_length": settings.max_complexity,
            "max_evaluations": 2**62,
            "n_threads": settings.threads,
            "random_state": settings.seed,
        }
        if settings.max_time_s is not None:
            kw["max_time"] = max(1, int(math.ceil(settings.max_time_s)))
        extra = dict(settings.extra)
        clash = set(extra) & _OUR_KEYS
        if clash:
            raise ValueError(f"set {sorted(clash)} through SRSettings fields, not extra")
        from pyoperon.sklearn import SymbolicRegressor

        accepted = set(inspect.signature(SymbolicRegressor.__init__).parameters) - {"self"}
        unknown = set(extra) - accepted
        if unknown:
            raise ValueError(f"unknown pyoperon options {sorted(unknown)}; accepted: {sorted(accepted)}")
        kw.update(extra)
        return kw

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        names: Sequence[str],
        settings: SRSettings,
        *,
        on_generation: Callable[[int, float], None] | None = None,
    ) -> ParetoFront:
        """The front of a pyoperon search (see ``docs/symbolic.md``); ``on_generation(generation,
        best_r2)`` is called on this thread after each generation (:func:`fit_reporting`)."""
        ok, why = self.available()
        if not ok:
            raise RuntimeError(f"operon backend unavailable: {why}")
        X, y, names = check_fit_inputs(X, y, names)
        from pyoperon.sklearn import SymbolicRegressor

        kw = self.regressor_kwargs(settings)
        t0 = time.perf_counter()
        reg = SymbolicRegressor(**kw)
        if on_generation is None:
            reg.fit(X, y)
        else:
            fit_reporting(reg, X, y, on_generation)
        elapsed = time.perf_counter() - t0
        hashes = list(reg.variables_)  # ordered by column index
        names_by_hash = {h: names[i] for i, h in enumerate(hashes)}
        tiny = 1e-6 * (float(np.std(y)) + 1e-300)  # changes R² by at most 1e-12
        equations = []
        undefined = 0
        models = list(reg.pareto_front_)
        if len(models) > MAX_FRONT_EQUATIONS:  # a huge population's front: converting each costs sympy work
            warnings.warn(
                f"Operon's front has {len(models):,} models; the first {MAX_FRONT_EQUATIONS:,} are kept",
                stacklevel=2,
            )
            models = models[:MAX_FRONT_EQUATIONS]
        for model in models:
            try:
                eq = tree_to_equation(model["tree"], names_by_hash).fold_constants()
            except ValueError:
                continue
            eq = eq.with_constants([_f32(v) for v in eq.constants])
            if settings.allow_offset:
                eq = _drop_unit_factors(_drop_tiny_offset(eq, tiny))
            else:
                kept = remove_offset(
                    _drop_unit_factors(eq), X, y, names, max_complexity=settings.max_complexity
                )
                if kept is None:
                    undefined += 1
                    continue
                eq = kept
            eq.provenance["operon_length"] = int(model["length"])
            equations.append(eq)
        prov = {
            "backend": self.name,
            "seed": settings.seed,
            "settings": settings.to_dict(),
            "operon_kwargs": {k: v for k, v in kw.items() if k != "max_evaluations"},
            "generations_run": int(reg.stats_.get("generations", -1)),
            "time_s": elapsed,
        }
        if undefined:
            prov["left_out"] = {"no_zero_at_zero_form": undefined}
        return finish_front(equations, X, y, names, prov, settings=settings)
