"""Pydantic models of a suite file; every validation error names the YAML path that is wrong.

A suite is a named list of stages, run as a graph of their ``from_stage`` references
(:mod:`harness.config.graph`). Each stage is one Ray Tune experiment whose trials
are the cross product its fields describe (for ``evaluate``: optimizee x horizon x optimizer x seed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from harness.config.specs import (  # noqa: F401 - re-exported: stage kinds and plug-ins import them from here
    LABEL_PATTERN,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    SINGLE_HORIZON_ERROR,
    Label,
    Name,
    OptimizeeHorizons,
    OptimizeeSpec,
)
from harness.config.specs import StrictModel as _Model
from harness.features import ADAM_BETAS, ADAM_EPS
from search_spaces.safe_yaml import YAMLInputError, read_yaml


class SuiteError(ValueError):
    """A suite file that cannot be used; the message lists each wrong YAML path and why."""


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------
class Scheduled(_Model):
    """The step-size schedule every optimizer family takes (:mod:`harness.training.schedules`)."""

    #: the grid's shorthand for ``schedule: cosine``
    cosine: bool = False
    #: the schedule after warm-up: ``constant``, ``cosine`` or ``linear`` (decay to 0 at the run's end)
    schedule: Literal["constant", "cosine", "linear"] | None = None
    #: linear warm-up over this fraction of the run
    warmup: float = Field(default=0.0, ge=0, le=0.5)

    @model_validator(mode="after")
    def _one_schedule(self) -> Scheduled:
        if self.cosine and self.schedule not in (None, "cosine"):
            raise ValueError(f"cosine: true contradicts schedule: {self.schedule}; give one of them")
        return self


class SGDSpec(Scheduled):
    family: Literal["sgd"]
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    name: str | None = None

    @model_validator(mode="after")
    def _nesterov(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class AdamSpec(Scheduled):
    family: Literal["adam"]
    lr: float = Field(gt=0)
    betas: tuple[float, float] = ADAM_BETAS
    eps: float = Field(default=ADAM_EPS, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    name: str | None = None


class TeacherOptSpec(Scheduled):
    """A meta-trained teacher used as an optimizer: a checkpoint file or an earlier stage's output."""

    family: Literal["teacher"]
    checkpoint: str | None = None
    from_stage: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _source(self) -> TeacherOptSpec:
        if (self.checkpoint is None) == (self.from_stage is None):
            raise ValueError("give exactly one of checkpoint (a .pt file) or from_stage (a meta_train stage)")
        return self


class SymbolicOptSpec(Scheduled):
    """A symbolic optimizer: an equation JSON file or an earlier distill/meta_tune stage's output (each of its
    equations; ``name`` is suffixed per equation when it gave several)."""

    family: Literal["symbolic"]
    equation: str | None = None
    from_stage: str | None = None
    lr_mult: float = Field(default=1.0, gt=0)
    name: str | None = None

    @model_validator(mode="after")
    def _source(self) -> SymbolicOptSpec:
        if (self.equation is None) == (self.from_stage is None):
            raise ValueError(
                "give exactly one of equation (a JSON file) or from_stage (a distill/meta_tune stage)"
            )
        return self


class GridRef(_Model):
    """A named grid of ``search_spaces/baselines.yaml`` (or another file given by ``file``)."""

    grid: str
    file: str | None = None

    @model_validator(mode="after")
    def _exists(self) -> GridRef:
        from search_spaces import load_grid

        specs: dict[str, type[_Model]] = {
            "sgd": SGDSpec,
            "adam": AdamSpec,
            "teacher": TeacherOptSpec,
            "symbolic": SymbolicOptSpec,
        }
        where = f"grid {self.grid!r}" + (f" of {self.file}" if self.file else "")
        for cfg in load_grid(self.grid, self.file):  # raises with the known grid names
            spec = specs.get(str(cfg.get("family")))
            if spec is None:
                raise ValueError(
                    f"{where} has an entry of unknown family {cfg.get('family')!r}; "
                    f"families: {', '.join(specs)}"
                )
            try:
                spec.model_validate(cfg)
            except ValidationError as err:
                e = err.errors()[0]
                field = ".".join(str(x) for x in e["loc"]) or "entry"
                raise ValueError(f"{where}: entry {cfg}: {field}: {e['msg']}") from None
        return self


class TunedRef(_Model):
    """The optimizer config an ``hpo`` stage chose (its best proposal on the validation split), run under
    ``name`` (default: the stage's name)."""

    tuned: str
    name: str | None = None


#: fields of an optimizer entry that are never crossed (they name or locate one thing)
_NOT_CROSSED = ("family", "name", "checkpoint", "equation", "from_stage")


class OptimizerBlock(_Model):
    """An optimizer entry whose fields may hold lists: the lists are crossed like a grid block."""

    #: the scalar spec model each combination is validated as
    spec: ClassVar[type[_Model]]
    family: str

    def expand(self) -> list[_Model]:
        """One scalar spec per combination of the list-valued fields (in a stable order)."""
        from search_spaces import cross

        return [self.spec.model_validate(c) for c in cross(self.model_dump(exclude_unset=True))]

    @model_validator(mode="after")
    def _combinations(self) -> OptimizerBlock:
        from search_spaces import GridError

        try:
            self.expand()
        except GridError as err:
            raise ValueError(str(err)) from None
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(first["msg"].removeprefix("Value error, ")) from None
        return self


def _block_model(spec: type[_Model]) -> type[OptimizerBlock]:
    """``spec`` with every crossable field also accepting a non-empty list of its values."""
    fields: dict[str, Any] = {}
    for name, f in spec.model_fields.items():
        if name in _NOT_CROSSED:
            fields[name] = (f.annotation, f)
            continue
        elem = Annotated.__class_getitem__((f.annotation, *f.metadata)) if f.metadata else f.annotation  # type: ignore[attr-defined]
        many = Annotated[list[elem], Field(min_length=1)]  # type: ignore[valid-type]
        default = ... if f.is_required() else f.default
        fields[name] = (elem | many, Field(default=default, description=f.description))  # type: ignore[operator]
    model = create_model(f"{spec.__name__}Block", __base__=OptimizerBlock, __doc__=spec.__doc__, **fields)
    model.spec = spec
    return model


SGDBlock = _block_model(SGDSpec)
AdamBlock = _block_model(AdamSpec)
TeacherOptBlock = _block_model(TeacherOptSpec)
SymbolicOptBlock = _block_model(SymbolicOptSpec)


def _entry_kind(v: Any) -> str | None:
    """Which model an optimizer entry is: ``grid`` for a grid reference, else its ``family``."""
    if isinstance(v, dict):
        return "grid" if "grid" in v else "tuned" if "tuned" in v else v.get("family")
    if isinstance(v, (GridRef, TunedRef)):
        return "grid" if isinstance(v, GridRef) else "tuned"
    return getattr(v, "family", None)


OptimizerEntry = Annotated[
    Annotated[GridRef, Tag("grid")]
    | Annotated[TunedRef, Tag("tuned")]
    | Annotated[SGDBlock, Tag("sgd")]  # type: ignore[valid-type]
    | Annotated[AdamBlock, Tag("adam")]  # type: ignore[valid-type]
    | Annotated[TeacherOptBlock, Tag("teacher")]  # type: ignore[valid-type]
    | Annotated[SymbolicOptBlock, Tag("symbolic")],  # type: ignore[valid-type]
    Discriminator(
        _entry_kind,
        custom_error_type="optimizer_entry",
        custom_error_message=(
            "an optimizer entry needs 'grid: NAME', 'tuned: HPO_STAGE' or 'family:' one of sgd, adam, teacher, "
            "symbolic"
        ),
    ),
]


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
class Resources(_Model):
    """Per-trial resources; GPUs are asked for only where the cluster has them."""

    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0)


#: ``(referenced stage name, stage kinds it may be)``: one ``from_stage`` of a stage
StageRef = tuple[str, tuple[str, ...]]


class StageBase(_Model):
    """Fields every stage kind has; a kind's spec model subclasses this with ``kind: Literal[...]``."""

    kind: str
    name: Name
    resources: Resources | None = None
    max_failures: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, gt=0)

    def inputs(self) -> list[StageRef]:
        """The earlier stages this stage reads (``from_stage`` fields) and the kinds each may be."""
        return []


class Metric(_Model):
    """The metric the leaderboard ranks by: one that evaluate trials record, and its direction."""

    name: str = "final_train_loss"
    mode: Literal["min", "max"] = "min"

    @field_validator("name")
    @classmethod
    def _recorded(cls, v: str) -> str:
        from harness.registry import STAGES

        # defined once, beside what records them (each leaderboard kind's metric_modes); read through the
        # registry, as this module sits below the stage kinds
        kinds = [(n, k) for n, k in STAGES.items() if getattr(k, "leaderboard", False)]
        modes = leaderboard_metric_modes(kinds)
        if v not in modes:
            known = ", ".join(f"{k} (mode: {m})" for k, m in modes.items())
            names = "/".join(n for n, _ in kinds) or "leaderboard"
            raise ValueError(f"{names} trials do not record a metric {v!r}; they record: {known}")
        return v


def leaderboard_metric_modes(kinds: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """``{metric: mode}`` that the leaderboard kinds among ``(name, kind)`` record, in kind order."""
    modes: dict[str, str] = {}
    for _, kind in kinds:
        if getattr(kind, "leaderboard", False):
            for k, m in kind.metric_modes.items():
                modes.setdefault(k, m)
    return modes


class Suite(_Model):
    """A suite file: stages (each reading only earlier ones, so the suite order is one valid run order), run
    as a graph and tracked under one MLflow parent run.

    ``stages`` holds one spec model per entry, of the kind its ``kind:`` names; the kinds are those in
    :data:`harness.registry.STAGES` (built-ins and plug-ins), so :func:`load_suite_dict` validates with
    :func:`suite_model`, which knows them all.
    """

    name: Name
    description: str = ""
    metric: Metric = Field(default_factory=Metric)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(default=1, ge=0)
    stages: list[StageBase] = Field(min_length=1)

    def stage_resources(self, stage: StageBase) -> Resources:
        """A stage's per-trial resources: its own ``resources:``, else the suite's."""
        return stage.resources or self.resources

    @model_validator(mode="after")
    def _stage_references(self) -> Suite:
        seen: set[str] = set()
        for s in self.stages:
            if s.name in seen:
                raise ValueError(f"stage name {s.name!r} is used twice; stage names must be unique")
            seen.add(s.name)
        for i, s in enumerate(self.stages):
            earlier = {t.name: t.kind for t in self.stages[:i]}
            for ref, kinds in s.inputs():
                if ref not in earlier:
                    raise ValueError(
                        f"stage {s.name!r} uses from_stage {ref!r}, which is not an earlier stage "
                        f"(earlier stages: {', '.join(earlier) or 'none'})"
                    )
                if earlier[ref] not in kinds:
                    raise ValueError(
                        f"stage {s.name!r} uses from_stage {ref!r}, a {earlier[ref]} stage; "
                        f"it needs a {' or '.join(kinds)} stage here"
                    )
        return self

    def stage(self, name: str) -> StageBase:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"suite {self.name!r} has no stage {name!r}")


_SUITE_MODELS: dict[tuple[type, ...], type[Suite]] = {}


def suite_model() -> type[Suite]:
    """The :class:`Suite` model whose ``stages`` accept every registered stage kind (by ``kind:``)."""
    from harness.registry import STAGES

    specs = tuple(kind.spec_model for _, kind in STAGES.items())
    model = _SUITE_MODELS.get(specs)
    if model is None:
        tagged = tuple(
            Annotated[spec, Tag(spec.model_fields["kind"].annotation.__args__[0])] for spec in specs
        )
        entry = Annotated[
            Union[tagged],  # noqa: UP007 - a union built at run time
            Discriminator(
                _stage_kind,
                custom_error_type="stage_kind",
                custom_error_message=(
                    f"a stage needs 'kind:' one of {', '.join(STAGES.names())} "
                    "(plug-ins add kinds through the 'symbolic_l2o.stages' entry-point group)"
                ),
            ),
        ]
        model = create_model(
            "Suite",
            __base__=Suite,
            stages=(list[entry], Field(min_length=1)),  # pyright: ignore[reportInvalidTypeForm] - built at run time
        )
        _SUITE_MODELS[specs] = model
    return model


def _stage_kind(v: Any) -> str | None:
    return v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
#: tags of the optimizer-entry union (stage kinds' names are added from the registry)
_OPTIMIZER_TAGS = {"grid", "sgd", "adam", "teacher", "symbolic"}


def _branch_names() -> set[str]:
    from harness.registry import STAGES

    return _OPTIMIZER_TAGS | set(STAGES.names())


#: pydantic's names for union branches of plain types, which are not YAML keys
_TYPE_BRANCHES = {"float", "int", "bool", "str", "none"}


def _format_loc(loc: tuple[Any, ...]) -> str:
    """Pydantic's error location as a YAML path (``stages[0].optimizees[1].epochs``)."""
    out = ""
    branches = _branch_names()
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in branches or part in _TYPE_BRANCHES or any(c in str(part) for c in "[-("):
            continue  # union-branch / validator names are not YAML keys
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _stage_kind_at(data: Any, loc: tuple[Any, ...]) -> str | None:
    """The ``kind:`` of the stage an error location ``("stages", i, ...)`` points into, if any."""
    if isinstance(data, dict) and len(loc) > 1 and loc[0] == "stages" and isinstance(loc[1], int):
        stages = data.get("stages")
        if isinstance(stages, list) and 0 <= loc[1] < len(stages) and isinstance(stages[loc[1]], dict):
            kind = stages[loc[1]].get("kind")
            return kind if isinstance(kind, str) else None
    return None


def _unknown_field(data: Any, loc: tuple[Any, ...]) -> str:
    """The message for a field no model has: the closest known name and, for a stage's own fields or the
    suite's, the known ones."""
    from harness.registry import STAGES, did_you_mean

    name = str(loc[-1])
    branches = _branch_names() | _TYPE_BRANCHES
    loc = tuple(x for x in loc if not (isinstance(x, str) and x in branches))  # union tags are not keys
    known: list[str] = []
    if len(loc) == 1:
        known = sorted(suite_model().model_fields)
    elif len(loc) == 3 and loc[0] == "stages":
        kind = _stage_kind_at(data, loc)
        if kind is not None and kind in STAGES:
            known = sorted(STAGES.get(kind).spec_model.model_fields)
    if not known:
        return f"unknown field {name!r} (not allowed here; check the spelling)"
    return f"unknown field {name!r}{did_you_mean(name, known)}; known fields here: {', '.join(known)}"


def _unknown_kind(data: Any, loc: tuple[Any, ...]) -> str | None:
    """The message for a stage whose ``kind:`` names no registered kind (None when it has no ``kind:``)."""
    from harness.registry import STAGES, did_you_mean

    kind = _stage_kind_at(data, (*loc, "kind"))
    if kind is None:
        return None
    return (
        f"unknown stage kind {kind!r}{did_you_mean(kind, STAGES.names())}; known kinds: "
        f"{', '.join(STAGES.names())} (plug-ins add kinds through the 'symbolic_l2o.stages' entry-point group)"
    )


#: the most problems one error message lists (the rest are counted)
MAX_ERROR_LINES = 10


def format_validation_error(err: ValidationError, source: str, data: Any = None) -> str:
    """One line per problem: ``file: yaml.path: message``.

    Where a field accepts a value or a list of values, a bad list item is reported at its own path
    (``lr[1]``) and the "not a single value" complaint about the whole list is left out. Given the
    suite's ``data``, a list of horizons where a stage trains at one names that stage's kind.
    """
    found: dict[tuple[str, str], None] = {}  # ordered, and a set: linear in the number of problems
    for e in err.errors():
        path = _format_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = _unknown_field(data, tuple(e["loc"]))
        elif e["type"] == "stage_kind":
            msg = _unknown_kind(data, tuple(e["loc"])) or msg
        kind = _stage_kind_at(data, tuple(e["loc"])) if e["type"] == SINGLE_HORIZON_ERROR else None
        if kind:
            msg = msg.replace("this stage", f"a {kind} stage", 1)
        found.setdefault((path, msg), None)
    # a path with an item below it (``lr`` and ``lr[1]``) is the same problem: keep the item's line
    parents = {path[:i] for path, _ in found for i, c in enumerate(path) if c == "["}
    lines = [f"{source}: {path}: {msg}" for path, msg in found if path not in parents]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - MAX_ERROR_LINES
        lines = [*lines[:MAX_ERROR_LINES], f"{source}: ... and {more} more problem(s) like these"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
FILE_FIELDS: dict[str, str] = {
    "checkpoint": "teacher checkpoint",
    "equation": "equation file",
    "file": "grid file",
}
"""Fields that name a file a run reads, by field name, in any entry of any stage kind (plug-ins
included); :func:`load_suite_dict` checks each exists (relative to the current directory)."""


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a teacher checkpoint (``torch.save``'s zip format), from its zip directory only."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("data.pkl") for n in zf.namelist()[:1000]):
                return None
    except (zipfile.BadZipFile, OSError):
        pass
    return "is not one: not a file written by torch.save (teachers.checkpoint.save_teacher)"


def _not_an_equation(path: Path) -> str | None:
    """Why ``path`` cannot be an equation file (its JSON, read with the equation language's caps)."""
    from harness.symbolic.lang import Equation, EquationParseError

    try:
        Equation.load(path)
    except (EquationParseError, OSError) as err:
        return f"does not hold an equation: {' '.join(str(err).split())[:200]}"
    return None


#: what a referenced file must be, checked before a run starts (a checkpoint is a checkpoint ...)
FILE_KINDS: dict[str, Any] = {"checkpoint": _not_a_checkpoint, "equation": _not_an_equation}


def _walk(value: Any, path: str) -> Iterator[tuple[BaseModel, str]]:
    """Every pydantic model inside ``value`` with its YAML path."""
    if isinstance(value, BaseModel):
        yield value, path
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _walk(item, f"{path}.{k}" if path else str(k))


def reference_problems(suite: Suite) -> list[tuple[str, str]]:
    """``(yaml path, problem)`` for each referenced file that is missing and each bad label."""
    out: list[tuple[str, str]] = []
    for model, path in _walk(suite, ""):
        for field, what in FILE_FIELDS.items():
            value = getattr(model, field, None) if field in type(model).model_fields else None
            if not isinstance(value, str):
                continue
            p = Path(value)
            if p.is_dir():
                out.append((f"{path}.{field}", f"{what} {value!r} is a directory, not a file"))
            elif not p.is_file():
                where = "" if p.is_absolute() else f" (relative paths are read from {os.getcwd()})"
                out.append((f"{path}.{field}", f"{what} {value!r} does not exist{where}"))
            elif field in FILE_KINDS:
                problem = FILE_KINDS[field](p)
                if problem:
                    out.append((f"{path}.{field}", f"{what} {value!r} {problem}"))
        label = getattr(model, "label", None) if "label" in type(model).model_fields else None
        if isinstance(label, str) and (
            len(label) > MAX_NAME_LENGTH or label in (".", "..") or not re.fullmatch(LABEL_PATTERN, label)
        ):
            out.append(
                (
                    f"{path}.label",
                    f"bad label {label[:MAX_NAME_LENGTH]!r}: use at most {MAX_NAME_LENGTH} of "
                    "A-Z a-z 0-9 _ . + - (not '.' or '..')",
                )
            )
    return out


def load_suite_dict(data: Any, source: str = "<suite>") -> Suite:
    """Validate an already-parsed YAML mapping, then check the files it references exist."""
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: a suite file must be a YAML mapping with name and stages")
    try:
        suite = suite_model().model_validate(data)
    except ValidationError as err:
        raise SuiteError(format_validation_error(err, source, data)) from None
    problems = reference_problems(suite)
    if problems:
        raise SuiteError("\n".join(f"{source}: {path}: {msg}" for path, msg in problems))
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read (safely, within the caps of :mod:`search_spaces.safe_yaml`) and validate a suite YAML file;
    raise SuiteError naming each wrong YAML path."""
    p = Path(path)
    if not p.exists():
        raise SuiteError(f"suite file {str(p)!r} does not exist")
    try:
        data = read_yaml(p)
    except YAMLInputError as err:
        raise SuiteError(str(err)) from None
    return load_suite_dict(data, str(p))


#: the most trials one stage, and a whole suite, may plan unless ``--max-trials`` / ``--max-suite-trials``
#: say otherwise: a typo in a grid or a seed range must not queue a million trials
MAX_STAGE_TRIALS = 10_000
MAX_SUITE_TRIALS = 50_000


def trial_caps(max_stage: int | None = None, max_suite: int | None = None) -> tuple[int, int]:
    """``(per stage, per suite)`` trial caps: the given ones, else the defaults."""
    return (
        MAX_STAGE_TRIALS if max_stage is None else int(max_stage),
        MAX_SUITE_TRIALS if max_suite is None else int(max_suite),
    )


def check_trial_caps(
    suite: Suite, max_stage: int = MAX_STAGE_TRIALS, max_suite: int = MAX_SUITE_TRIALS
) -> dict[str, int]:
    """``{stage: fewest trials}`` of ``suite`` (:meth:`~harness.stages.base.StageKind.min_trials`: what its
    own fields cross to, each earlier stage's output counted once); SuiteError naming each stage over
    ``max_stage`` and the suite when the total is over ``max_suite``. ``run`` checks the exact count again
    when it plans each stage."""
    from harness.registry import STAGES

    counts = {s.name: STAGES.get(s.kind).min_trials(s) for s in suite.stages}
    problems = [
        f"stages[{i}] ({s.name}): at least {counts[s.name]:,} trials, over the cap of {max_stage:,} per stage; "
        "shrink its grid, seeds or horizons, or pass --max-trials to allow it"
        for i, s in enumerate(suite.stages)
        if counts[s.name] > max_stage
    ]
    total = sum(counts.values())
    if total > max_suite:
        problems.append(
            f"suite {suite.name!r}: at least {total:,} trials in all, over the cap of {max_suite:,}; "
            "pass --max-suite-trials to allow it"
        )
    if problems:
        raise SuiteError("\n".join(problems[:MAX_ERROR_LINES]))
    return counts


def check_resources(suite: Suite, available_cpus: float) -> None:
    """Refuse a suite whose trials ask for more CPUs than ``available_cpus`` (e.g. ``os.cpu_count()``).

    For a run on this machine (no cluster address): Ray would queue such a trial forever. Each stage's
    resources are its own ``resources:`` or else the suite's; the error names the YAML path that sets them.
    """
    problems: list[str] = []
    for i, stage in enumerate(suite.stages):
        path = f"stages[{i}].resources" if stage.resources is not None else "resources"
        res = suite.stage_resources(stage)
        line = (
            f"suite {suite.name!r}: {path}.cpus_per_trial: {res.cpus_per_trial:g} CPUs per trial, but this "
            f"machine has {available_cpus:g}; lower it, or pass --address of a Ray cluster that has them"
        )
        if res.cpus_per_trial > available_cpus and line not in problems:
            problems.append(line)
    if problems:
        raise SuiteError("\n".join(problems))
