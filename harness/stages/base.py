"""The stage contract: what one stage kind owns, and how a trial talks to whatever runs it.

A :class:`StageKind` owns its spec and trial models, its plan, the pure run of one trial, a finalize step,
its outputs, and the hooks through which the CLI summary, ``sl2o report`` and the tracking queries treat it:
nothing outside ``harness/stages`` names a kind. ``docs/architecture.md`` and ``docs/stages/`` walk through it.
"""

from __future__ import annotations

import ast
import dataclasses
import tempfile
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from harness.config.specs import EarlyStopping
from harness.config.suite import StageBase, Suite
from harness.stages.outputs import STATUS_OK, TAG, StageOutcome
from harness.stages.views import Panel, StageView

SpecT = TypeVar("SpecT", bound=StageBase)
TrialT = TypeVar("TrialT", bound=BaseModel)


class TrialModel(BaseModel):
    """Base of every trial model: strict fields, frozen, picklable (it crosses into Ray Tune as is)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass
class TrialResult:
    """What one trial's :meth:`StageKind.run` returns.

    Attributes:
        metrics: final scalar metrics (logged to MLflow; non-finite values are dropped there).
        status: ``ok`` or ``diverged`` (a diverged run is a result, never an exception).
        files: artifact name -> local path; the runner copies them into the trial's artifacts.
        info: extra string facts logged as ``sl2o.<name>`` tags (e.g. ``stop_reason``).
    """

    metrics: dict[str, float]
    status: str = STATUS_OK
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


@dataclass
class SearchSpec:
    """Trials proposed by a search (pure: Optuna objects, no Ray); the runner layer turns it into a Tune search.

    Attributes:
        base: the trial model every proposal starts from (:meth:`StageKind.searched_trial` adds the values).
        space: Optuna distributions by parameter name.
        num_samples: how many trials the search runs in all.
        metric / mode: the final-report metric the search reads, and its direction.
        sampler: an Optuna sampler (TPE, CMA-ES, ...), None for Optuna's default.
        start: points evaluated first (e.g. the equation as given), in order.
    """

    base: BaseModel
    space: dict[str, Any]
    num_samples: int
    metric: str
    mode: str = "min"
    sampler: Any = None
    start: list[dict[str, Any]] = field(default_factory=list)


class TrialContext(Protocol):
    """What a running trial may ask of its runner (Ray Tune in a suite, :class:`LocalContext` in tests)."""

    #: CPUs this trial may use (torch threads are already set to it)
    cpus: int
    #: an empty scratch directory the trial may write its output files to
    outdir: Path

    def progress(self, step: int, **values: float) -> None:
        """Record one curve point (``step`` and named values); the runner streams them in batches."""
        ...

    def checkpoint(self, state: Mapping[str, Any], **metrics: float) -> None:
        """Save ``state`` (tensors and plain values) so a retried trial resumes from it."""
        ...

    def set_total(self, total: int) -> None:
        """The step :meth:`progress` will reach at the end, when known (for the ETA)."""
        ...

    def restore(self) -> Mapping[str, Any] | None:
        """The state of the last :meth:`checkpoint` of this trial, or None on a fresh start."""
        ...


class LocalContext:
    """A :class:`TrialContext` without Ray: curve points and checkpoints are kept in memory."""

    def __init__(self, outdir: str | Path | None = None, cpus: int = 1) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if outdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sl2o-trial-")
            outdir = self._tmp.name
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.curves: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self.state: Mapping[str, Any] | None = None
        self.total: int | None = None

    def set_total(self, total: int) -> None:
        self.total = int(total)

    def progress(self, step: int, **values: float) -> None:
        self.steps.append(int(step))
        for k, v in values.items():
            self.curves.setdefault(k, []).append(float(v))

    def checkpoint(self, state: Mapping[str, Any], **metrics: float) -> None:
        self.state = state

    def restore(self) -> Mapping[str, Any] | None:
        return self.state


class StageKind(Generic[SpecT, TrialT]):
    """One stage kind (see the module docstring); subclass it and register an instance in ``STAGES``."""

    #: the ``kind:`` value in suite files
    name: ClassVar[str] = ""
    spec_model: ClassVar[type[StageBase]]
    trial_model: ClassVar[type[TrialModel]]
    #: artifact files each finished trial writes
    outputs: ClassVar[tuple[str, ...]] = ()
    #: the trial metric Tune tracks (and its direction)
    metric: ClassVar[str] = ""
    mode: ClassVar[str] = "min"
    #: trial-model fields that identify a trial (its ``sl2o.config`` tag)
    identity: ClassVar[tuple[str, ...]] = ()
    #: its finished trials are leaderboard rows, ranked by the suite's ``metric:``
    leaderboard: ClassVar[bool] = False
    #: the metrics a suite's ``metric:`` may name (leaderboard kinds), with the mode that ranks them
    metric_modes: ClassVar[Mapping[str, str]] = {}
    #: the end-of-run summary already prints the rules this kind produced (so the CLI does not repeat them)
    summary_shows_equations: ClassVar[bool] = False
    #: it gives rows to ``sl2o distill-summary`` (:meth:`summary_rows`)
    summary_table: ClassVar[bool] = False
    #: the :meth:`TrialContext.progress` value early stopping compares between trials of one task (lower is
    #: better); empty for kinds without early stopping
    interim_metric: ClassVar[str] = ""

    def min_trials(self, spec: SpecT) -> int:
        """The fewest trials :meth:`plan` can give for ``spec`` whatever earlier stages produce (each input an
        earlier stage gives counts once): how ``sl2o validate`` checks the trial caps before a run."""
        return 1

    def plan(self, suite: Suite, spec: SpecT, inputs: Mapping[str, StageOutcome]) -> list[TrialT]:
        """The stage's trials, one model each; ``inputs`` holds the outcomes of ``spec.inputs()``."""
        raise NotImplementedError(f"stage kind {self.name!r} does not define plan()")

    def run(self, trial: TrialT, ctx: TrialContext) -> TrialResult:
        """Run one trial (pure: no Ray, no MLflow)."""
        raise NotImplementedError(f"stage kind {self.name!r} does not define run()")

    def finalize(self, spec: SpecT, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]) -> None:
        """Stage-level work after the trials (fresh or reused); files written to ``outdir`` are logged."""

    def summarize(self, spec: SpecT, outcome: StageOutcome) -> list[str]:
        """Lines for the end-of-run summary: trial counts, the kind's own lines, and trials' warnings."""
        head = f"[{outcome.name}] {self.name}: {len(outcome.trials)} trials ok, {outcome.errors} errored"
        lines = [head + (" (reused)" if outcome.reused else "")]
        lines += [f"  {line}" for line in self.summary_lines(spec, outcome)]
        for t in outcome.trials:
            warning = t.tags.get(f"{TAG}.warning")
            if warning:
                lines.append(f"  WARNING ({t.run_id[:8]}): {warning}")
        return lines

    def summary_lines(self, spec: SpecT, outcome: StageOutcome) -> list[str]:
        """What the stage produced, a line or a few per trial or per output (default: nothing more)."""
        return []

    def equations(self, outcome: StageOutcome) -> list[tuple[str, Path]] | None:
        """``(label, equation file)`` of the update rules a finished stage produced; None for kinds that
        produce no rules (default). Raises ValueError when a rule-producing stage produced none."""
        return None

    def summary_rows(self, artifacts: Path, stage: str) -> list[dict[str, Any]] | None:
        """Rows for ``sl2o distill-summary`` from a finished stage run's artifacts (downloaded to
        ``artifacts``); None for kinds that have none (default)."""
        return None

    def report(self, view: StageView, out: Path) -> list[Panel]:
        """The stage's panels (PNG files written under ``out``) for ``sl2o report`` (default: none)."""
        return []

    def search(self, spec: SpecT, trials: list[TrialT]) -> SearchSpec | None:
        """A search that proposes the stage's trials one by one, or None (default): run ``trials`` as planned."""
        return None

    def searched_trial(self, base: TrialT, values: Mapping[str, Any], index: int) -> TrialT:
        """The trial of search proposal number ``index`` with parameter ``values`` (kinds that search)."""
        raise NotImplementedError(f"stage kind {self.name!r} does not define searched_trial()")

    def early_stopping(self, spec: SpecT) -> EarlyStopping | None:
        """The stage's early-stopping settings, or None (default): every trial runs to its end."""
        return None

    def trial_task(self, trial: TrialT) -> tuple[str, int] | None:
        """``(task label, total steps)`` of a trial: early stopping compares only trials of one task (their
        losses are comparable), at rungs below its total steps. None (default): never stopped early."""
        return None

    def trial_tags(self, trial: TrialT) -> dict[str, str]:
        """Short facts about a trial, logged as ``sl2o.<key>`` tags (used to label and find runs)."""
        return {}

    def trial_params(self, trial: TrialT) -> dict[str, Any]:
        """The trial's config as (nested) MLflow params; default: the whole model."""
        return trial.model_dump(mode="json")

    def check(self) -> None:
        """Refuse a kind that is missing a part of the contract (called when it is registered)."""
        for attr in ("spec_model", "trial_model"):
            if not isinstance(getattr(type(self), attr, None), type):
                raise TypeError(f"stage kind {type(self).__name__} must set {attr} to a pydantic model class")
        if not self.name:
            raise TypeError(f"stage kind {type(self).__name__} must set name")
        kind_field = self.spec_model.model_fields.get("kind")
        if kind_field is None or typing.get_args(kind_field.annotation) != (self.name,):
            raise TypeError(
                f"stage kind {self.name!r}: {self.spec_model.__name__}.kind must be Literal[{self.name!r}]"
            )
        if not self.metric:
            raise TypeError(f"stage kind {self.name!r} must set metric (the trial metric Tune tracks)")


def run_local(kind: StageKind[Any, Any], trial: BaseModel, ctx: TrialContext | None = None) -> TrialResult:
    """Validate ``trial`` again and run it with ``kind`` outside Ray (what the Tune trainable does in a suite)."""
    checked = kind.trial_model.model_validate(trial.model_dump(exclude_unset=True))
    return kind.run(checked, ctx if ctx is not None else LocalContext())


# -- typed settings derived from the one definition of each settings dataclass --------------------------------
def settings_fields(source: type | Callable[..., Any] | str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{name: annotation}`` of a dataclass's fields or a function's keyword parameters.

    ``source`` may name a function as ``"module:function"``: its signature is then read from the module's
    source (:func:`signature_from_source`) without importing it, so a stage kind derives its settings model
    from a torch module's function while ``sl2o validate`` stays torch-free.
    """
    import inspect

    if isinstance(source, str):
        return {n: t for n, t in signature_from_source(source).items() if n not in exclude}
    hints = typing.get_type_hints(source)
    if dataclasses.is_dataclass(source):
        names = [f.name for f in dataclasses.fields(source)]
    else:
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = [p.name for p in inspect.signature(source).parameters.values() if p.kind in kinds]
    return {n: hints.get(n, Any) for n in names if n not in exclude}


#: the names an annotation read by :func:`signature_from_source` may use; any other annotation is ``Any``
_ANNOTATION_NAMES: dict[str, Any] = {
    **{t.__name__: t for t in (int, float, str, bool, dict, list, tuple)},
    "None": None,
    "Any": Any,
    "Literal": typing.Literal,
    "Sequence": typing.Sequence,
    "Mapping": typing.Mapping,
}


def signature_from_source(target: str) -> dict[str, Any]:
    """``{name: annotation}`` of the keyword parameters of ``"module:function"``, read from the module's source
    with :mod:`ast` (the module is found, not imported). Annotations built from :data:`_ANNOTATION_NAMES`
    (``int | None``, ``Sequence[int]``, ``Literal["a", "b"]``) are kept, others become ``Any``."""
    args, _ = _function_args(target)
    return {a.arg: _annotation(a.annotation) for a in args}


def defaults_from_source(target: str) -> dict[str, Any]:
    """``{name: default}`` of the parameters of ``"module:function"`` whose default is a literal, read from
    the module's source as :func:`signature_from_source` reads it."""
    args, defaults = _function_args(target)
    out = {}
    for a, d in zip(args[len(args) - len(defaults) :], defaults, strict=True):
        if d is not None:
            try:
                out[a.arg] = ast.literal_eval(d)
            except ValueError:
                continue
    return out


def _function_args(target: str) -> tuple[list[ast.arg], list[ast.expr | None]]:
    """The positional-or-keyword and keyword-only parameters of ``"module:function"`` and their defaults
    (aligned to the end of the list, ``None`` where a keyword-only one has none)."""
    import importlib.util

    module, _, name = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module {module!r} (for the settings of {target!r})")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if func is None:
        raise ImportError(f"module {module!r} defines no function {name!r}")
    a = func.args
    positional: list[ast.expr | None] = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
    return [*a.args, *a.kwonlyargs], [*positional, *a.kw_defaults]


def _annotation(node: ast.expr | None) -> Any:
    """The type an annotation's syntax tree spells, built from :data:`_ANNOTATION_NAMES` (``Any`` otherwise)."""
    import functools
    import operator

    if isinstance(node, ast.Name):
        return _ANNOTATION_NAMES.get(node.id, Any)
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int))):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation(node.left), _annotation(node.right)
        if left is Any or right is Any:
            return Any
        return typing.Union[left, right]  # noqa: UP007 - built at run time
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        origin = _ANNOTATION_NAMES.get(node.value.id)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin is typing.Literal:
            values = [i.value for i in items if isinstance(i, ast.Constant)]
            return typing.Literal[tuple(values)] if len(values) == len(items) else Any  # pyright: ignore[reportInvalidTypeArguments]
        args = [_annotation(i) for i in items]
        if origin is None or origin is Any or not args:
            return Any
        return functools.reduce(operator.getitem, [tuple(args) if len(args) > 1 else args[0]], origin)
    return Any


def settings_model(
    name: str, *sources: type | Callable[..., Any] | str, what: str, exclude: tuple[str, ...] = ()
) -> type[SettingsModel]:
    """A strict pydantic model of the fields of dataclasses and/or the keyword parameters of functions.

    Every field is optional (the source's default applies; see :func:`given`); unknown keys are refused
    with the known names; types come from the sources' annotations, so the settings a suite may give are
    defined once, where they are used.
    """
    fields: dict[str, Any] = {}
    for source in sources:
        for n, t in settings_fields(source, exclude).items():
            # unset fields keep the source's default (see given()); an explicit null is accepted only
            # where the source's own annotation accepts None
            fields.setdefault(n, (t, None))
    model = create_model(
        name, __base__=SettingsModel, __doc__=f"The {what} settings a suite may give.", **fields
    )
    model.what = what
    return model


class SettingsModel(BaseModel):
    """Base of the typed settings models: unknown keys are refused with the list of known ones."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)
    #: what the settings are for, in error messages ("meta-training")
    what: ClassVar[str] = "stage"

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = sorted(cls.model_fields)
            bad = sorted(set(data) - set(known))
            if bad:
                raise ValueError(f"unknown {cls.what} setting(s) {', '.join(bad)}; known: {', '.join(known)}")
        return data


def given(settings: BaseModel) -> dict[str, Any]:
    """The settings a suite actually set (unset fields keep the source's own defaults)."""
    return settings.model_dump(exclude_unset=True)
