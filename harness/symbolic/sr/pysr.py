"""PySR (SymbolicRegression.jl) backend, optional: used only where pysr and Julia are installed.

:meth:`PySRBackend.available` checks for Julia before importing pysr (whose import may download Julia);
nothing here imports pysr at module import time. Results are read from the hall of fame by our safe
parser and re-measured in float64; the search minimises the error of the zero-anchored rule
(:data:`ZERO_ANCHORED_LOSS`) unless ``allow_offset``. For ``settings.threads > 1`` set
``PYTHON_JULIACALL_THREADS`` before Python starts. The offline recipe and details: ``docs/symbolic.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.symbolic.lang.expression import Equation
from harness.symbolic.lang.front import ParetoFront
from harness.symbolic.lang.functions import relu, spow, ssqrt
from harness.symbolic.lang.hall_of_fame import import_hall_of_fame
from harness.symbolic.sr.base import SRSettings, check_fit_inputs, finish_front
from harness.symbolic.sr.offset import remove_offset

__all__ = [
    "PYSR_BINARY",
    "PYSR_UNARY",
    "ZERO_ANCHORED_LOSS",
    "PySRBackend",
    "hall_of_fame_front",
    "pysr_kwargs",
]

ZERO_ANCHORED_LOSS = """\
function sl2o_zero_anchored_loss(tree, dataset::Dataset{T,L}, options)::L where {T,L}
    prediction, ok = eval_tree_array(tree, dataset.X, options)
    !ok && return L(Inf)
    at_zero, ok0 = eval_tree_array(tree, zeros(T, size(dataset.X, 1), 1), options)
    !ok0 && return L(Inf)
    return L(sum(abs2, prediction .- at_zero[1] .- dataset.y) / length(dataset.y))
end
"""
"""PySR ``loss_function`` (Julia): mean squared error of the zero-anchored rule ``f(x) - f(0)``."""

_OWN_OBJECTIVE = ("loss_function", "loss_function_expression", "elementwise_loss", "expression_spec")

PYSR_BINARY: dict[str, str] = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "pow": "spow(x, y) = x == zero(x) ? zero(x) : sign(x) * abs(x)^y",
}
"""Our binary operators -> PySR ``binary_operators`` entries (``spow`` sign-extended, ``spow(0, y) = 0``)."""

PYSR_UNARY: dict[str, str] = {
    "square": "square",
    "cube": "cube",
    "sqrt": "ssqrt(x) = sign(x) * sqrt(abs(x))",
    "exp": "exp",
    "log": "log",
    "tanh": "tanh",
    "asinh": "asinh",
    "sinh": "sinh",
    "relu": "relu",
    "erfc": "erfc",
    "abs": "abs",
    "sign": "sign",
    "cos": "cos",
    "sin": "sin",
}
"""Our unary operators -> PySR ``unary_operators`` entries (``ssqrt`` sign-extended)."""


def pysr_kwargs(settings: SRSettings) -> dict[str, Any]:
    """``PySRRegressor`` keyword arguments for ``settings`` (pure Python: testable without Julia).

    ``settings.extra`` entries override the computed ones (e.g. ``{"populations": 8}``). Unless
    ``settings.allow_offset`` (or ``extra`` brings its own objective), ``loss_function`` is
    :data:`ZERO_ANCHORED_LOSS`.
    """
    binary = [PYSR_BINARY[o] for o in settings.operators if o in PYSR_BINARY]
    unary = [PYSR_UNARY[o] for o in settings.operators if o in PYSR_UNARY]
    unknown = [o for o in settings.operators if o not in PYSR_BINARY and o not in PYSR_UNARY]
    if unknown:  # pragma: no cover - every grammar operator is mapped
        raise ValueError(f"no PySR mapping for operators {unknown}")
    if not binary:
        raise ValueError("PySR needs at least one binary operator (add, sub, mul, div or pow)")
    mappings: dict[str, Any] = {}
    if "sqrt" in settings.operators:
        mappings["ssqrt"] = ssqrt
    if "pow" in settings.operators:
        mappings["spow"] = spow
    if "relu" in settings.operators:
        mappings["relu"] = relu
    serial = settings.threads <= 1
    kw: dict[str, Any] = {
        "binary_operators": binary,
        "unary_operators": unary,
        "extra_sympy_mappings": mappings,
        "niterations": settings.iterations,
        "population_size": settings.population_size,
        "maxsize": max(7, settings.max_complexity),  # PySR refuses maxsize < 7
        "random_state": settings.seed,
        "deterministic": serial,
        "parallelism": "serial" if serial else "multithreading",
        "should_optimize_constants": settings.optimizer_iterations > 0,
        "optimizer_iterations": max(1, settings.optimizer_iterations),
        "progress": False,
        "verbosity": 0,
        "temp_equation_file": True,
        "delete_tempfiles": True,
    }
    if not serial:
        kw["procs"] = settings.threads
    if settings.max_time_s is not None:
        kw["timeout_in_seconds"] = float(settings.max_time_s)
    own = any(k in settings.extra for k in _OWN_OBJECTIVE) or bool(settings.extra.get("batching"))
    if not settings.allow_offset and not own:
        kw["loss_function"] = ZERO_ANCHORED_LOSS
    kw.update(settings.extra)
    return kw


def hall_of_fame_front(
    equations: Sequence[Equation],
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    settings: SRSettings,
    provenance: Mapping[str, Any],
) -> ParetoFront:
    """The front of PySR's hall-of-fame equations (as :func:`import_hall_of_fame` reads them).

    PySR's ``loss`` and ``complexity`` move to each equation's provenance (``pysr_loss``,
    ``pysr_complexity``: they describe PySR's equation, not necessarily the one returned); unless
    ``settings.allow_offset``, gradient-free terms are removed (:func:`remove_offset`); then
    :func:`finish_front` measures fit and complexity on the returned equations and applies
    ``max_complexity`` and the zero-at-zero check.
    """
    kept: list[Equation] = []
    undefined = 0
    for eq in equations:
        found = {f"pysr_{k.removeprefix('pysr_')}": v for k, v in eq.metrics.items()}
        out: Equation | None = eq.copy()
        if not settings.allow_offset:
            out = remove_offset(eq, X, y, names, max_complexity=settings.max_complexity)
        if out is None:
            undefined += 1
            continue
        out.metrics = {}
        out.provenance = {**out.provenance, **found}
        kept.append(out)
    prov = dict(provenance)
    if undefined:
        prov["left_out"] = {"no_zero_at_zero_form": undefined}
    return finish_front(kept, X, y, names, prov, settings=settings)


class PySRBackend:
    """PySR searches, read back through the safe hall-of-fame importer; see ``docs/symbolic.md``."""

    name = "pysr"
    _status: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        if PySRBackend._status is not None:
            return PySRBackend._status
        PySRBackend._status = self._probe()
        return PySRBackend._status

    @staticmethod
    def _probe() -> tuple[bool, str]:
        try:
            if importlib.util.find_spec("pysr") is None:
                return False, "pysr is not installed (pip install 'symbolic-l2o[pysr]'; it also needs Julia)"
        except Exception as exc:  # noqa: BLE001
            return False, f"pysr cannot be located ({type(exc).__name__}: {exc})"
        exe = os.environ.get("PYTHON_JULIAPKG_EXE") or shutil.which("julia")
        if not exe or not os.path.exists(exe):
            return False, (
                "Julia was not found (no `julia` on PATH and PYTHON_JULIAPKG_EXE unset); importing pysr "
                "would try to download it. See harness/symbolic/sr/pysr.py for the offline recipe."
            )
        try:
            importlib.import_module("pysr")
        except BaseException as exc:  # noqa: BLE001 - juliacall raises anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            return False, f"importing pysr failed ({type(exc).__name__}: {str(exc)[:300]})"
        return True, ""

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: SRSettings) -> ParetoFront:
        ok, why = self.available()
        if not ok:
            raise RuntimeError(f"pysr backend unavailable: {why}")
        X, y, names = check_fit_inputs(X, y, names)
        PySRRegressor = importlib.import_module("pysr").PySRRegressor

        kw = pysr_kwargs(settings)
        accepted = set(inspect.signature(PySRRegressor.__init__).parameters) - {"self"}
        bad_extra = set(settings.extra) - accepted
        if bad_extra:
            raise ValueError(f"unknown PySR options {sorted(bad_extra)}")
        dropped = set(kw) - accepted
        if dropped:
            warnings.warn(f"this PySR version does not take {sorted(dropped)}; ignoring them", stacklevel=2)
        kw = {k: v for k, v in kw.items() if k in accepted}
        t0 = time.perf_counter()
        model = PySRRegressor(**kw)
        model.fit(X, y)
        elapsed = time.perf_counter() - t0
        df = model.equations_
        cols = {c.lower(): c for c in df.columns}
        rows = [
            {"complexity": c, "loss": loss, "equation": e}
            for c, loss, e in zip(df[cols["complexity"]], df[cols["loss"]], df[cols["equation"]], strict=True)
        ]
        imported = import_hall_of_fame(rows, names)
        prov = {
            "backend": self.name,
            "seed": settings.seed,
            "settings": settings.to_dict(),
            "skipped": imported.provenance.get("skipped", 0),
            "zero_anchored_loss": kw.get("loss_function") == ZERO_ANCHORED_LOSS,
            "time_s": elapsed,
        }
        return hall_of_fame_front(imported.equations, X, y, names, settings, prov)
