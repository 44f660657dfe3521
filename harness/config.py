"""Pydantic models of a suite file; every validation error names the YAML path that is wrong.

A suite is a named list of stages run in order. Each stage is one Ray Tune experiment whose trials
are the cross product its fields describe (for ``evaluate``: optimizee x optimizer x seed).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)


class SuiteError(ValueError):
    """A suite file that cannot be used; the message lists each wrong YAML path and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ---------------------------------------------------------------------------------------------
# optimizees
# ---------------------------------------------------------------------------------------------
class OptimizeeSpec(_Model):
    """One optimizee: a registered name, its constructor kwargs and a training budget."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    steps: int | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    label: str | None = None

    @model_validator(mode="after")
    def _budget(self) -> OptimizeeSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from harness.registry import OPTIMIZEES

        factory = OPTIMIZEES.get(v)  # raises with the known names
        del factory
        return v

    @model_validator(mode="after")
    def _kwargs_match_signature(self) -> OptimizeeSpec:
        from harness.registry import OPTIMIZEES

        if self.name not in OPTIMIZEES:
            return self
        check_kwargs(OPTIMIZEES.get(self.name), self.kwargs, f"optimizee {self.name!r}")
        return self

    def display(self) -> str:
        """A short label like ``mlp(dataset=digits,hidden=[50, 20])``."""
        if self.label:
            return self.label
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()) if k not in ("root", "download"))
        return f"{self.name}({inner})" if inner else self.name


def check_kwargs(factory: Any, kwargs: dict[str, Any], what: str) -> None:
    """Refuse kwargs the factory's signature does not take (unless it takes ``**kwargs``)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    bad = sorted(set(kwargs) - set(params))
    if bad:
        known = ", ".join(k for k in params if k not in ("self", "seed", "device"))
        raise ValueError(f"{what} takes no argument(s) {', '.join(bad)}; it takes: {known}")


# ---------------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------------
class SGDSpec(_Model):
    family: Literal["sgd"]
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    cosine: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    name: str | None = None

    @model_validator(mode="after")
    def _nesterov(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class AdamSpec(_Model):
    family: Literal["adam"]
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    cosine: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    name: str | None = None


class TeacherOptSpec(_Model):
    """A meta-trained teacher used as an optimizer: a checkpoint file or an earlier stage's output."""

    family: Literal["teacher"]
    checkpoint: str | None = None
    from_stage: str | None = None
    cosine: bool = False
    name: str | None = None

    @model_validator(mode="after")
    def _source(self) -> TeacherOptSpec:
        if (self.checkpoint is None) == (self.from_stage is None):
            raise ValueError("give exactly one of checkpoint (a .pt file) or from_stage (a meta_train stage)")
        return self


class SymbolicOptSpec(_Model):
    """A symbolic optimizer: an equation JSON file or an earlier distill/meta_tune stage's output."""

    family: Literal["symbolic"]
    equation: str | None = None
    from_stage: str | None = None
    lr_mult: float = Field(default=1.0, gt=0)
    cosine: bool = False
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

        load_grid(self.grid, self.file)  # raises with the known grid names
        return self


def _entry_kind(v: Any) -> str | None:
    """Which model an optimizer entry is: ``grid`` for a grid reference, else its ``family``."""
    if isinstance(v, dict):
        return "grid" if "grid" in v else v.get("family")
    return "grid" if isinstance(v, GridRef) else getattr(v, "family", None)


OptimizerEntry = Annotated[
    Annotated[GridRef, Tag("grid")]
    | Annotated[SGDSpec, Tag("sgd")]
    | Annotated[AdamSpec, Tag("adam")]
    | Annotated[TeacherOptSpec, Tag("teacher")]
    | Annotated[SymbolicOptSpec, Tag("symbolic")],
    Discriminator(
        _entry_kind,
        custom_error_type="optimizer_entry",
        custom_error_message="an optimizer entry needs 'grid: NAME' or 'family:' one of sgd, adam, teacher, symbolic",
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
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    resources: Resources | None = None
    max_failures: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, gt=0)

    def inputs(self) -> list[StageRef]:
        """The earlier stages this stage reads (``from_stage`` fields) and the kinds each may be."""
        return []


class Metric(_Model):
    name: str = "final_train_loss"
    mode: Literal["min", "max"] = "min"


class Suite(_Model):
    """A suite file: stages run in order, tracked under one MLflow parent run.

    ``stages`` holds one spec model per entry, of the kind its ``kind:`` names; the kinds are those in
    :data:`harness.registry.STAGES` (built-ins and plug-ins), so :func:`load_suite_dict` validates with
    :func:`suite_model`, which knows them all.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    metric: Metric = Field(default_factory=Metric)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(default=1, ge=0)
    stages: list[StageBase] = Field(min_length=1)

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


def _format_loc(loc: tuple[Any, ...]) -> str:
    """Pydantic's error location as a YAML path (``stages[0].optimizees[1].epochs``)."""
    out = ""
    branches = _branch_names()
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in branches or "[" in str(part):
            continue  # union-branch / validator names are not YAML keys
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``file: yaml.path: message``."""
    lines = []
    seen = set()
    for e in err.errors():
        path = _format_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field {str(e['loc'][-1])!r} (not allowed here; check the spelling)"
        key = (path, msg)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{source}: {path}: {msg}")
    return "\n".join(lines)


def load_suite_dict(data: Any, source: str = "<suite>") -> Suite:
    """Validate an already-parsed YAML mapping."""
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: a suite file must be a YAML mapping with name and stages")
    try:
        return suite_model().model_validate(data)
    except ValidationError as err:
        raise SuiteError(format_validation_error(err, source)) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file; raise SuiteError naming each wrong YAML path."""
    p = Path(path)
    if not p.is_file():
        raise SuiteError(f"suite file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{p}: not valid YAML: {err}") from None
    return load_suite_dict(data, str(p))
