"""Pieces of suite specs that stage kinds share: names and labels, and optimizee specs with their horizons.

An optimizee spec names a registered optimizee, its constructor kwargs and a training budget, its
*horizon*: ``steps`` or ``epochs`` (neither: the optimizee's own ``default_steps``). An evaluate stage may
list several (:class:`OptimizeeHorizons`), each a trial and a leaderboard task of its own; every other stage
trains at one horizon (:class:`OptimizeeSpec`). :func:`horizon_label` and :func:`task_label` are the one
spelling of a horizon (``300 steps``) and a task (``mlp · 300 steps``) in tags, run names, tables and plots.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


class StrictModel(BaseModel):
    """Base of the suite-file models: unknown fields and non-finite numbers (``.inf``, ``.nan``) are refused."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


#: the largest seed (numpy's and torch's generators take seeds in 0 .. 2**32 - 1)
MAX_SEED = 2**32 - 1


def _distinct(v: list[int]) -> list[int]:
    dup = sorted(s for s, n in Counter(v).items() if n > 1)
    if dup:
        raise ValueError(f"seeds must be distinct; {', '.join(map(str, dup[:5]))} given more than once")
    return v


Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]
"""A seed: an integer in 0 .. :data:`MAX_SEED`."""
Seeds = Annotated[list[Seed], Field(min_length=1, max_length=10_000), AfterValidator(_distinct)]
"""A stage's seeds: 1 to 10,000 distinct :data:`Seed` values."""


# ---------------------------------------------------------------------------------------------
# names and labels
# ---------------------------------------------------------------------------------------------
#: longest suite / stage name or label (they become MLflow experiment and run names and folder names)
MAX_NAME_LENGTH = 100
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""Suite and stage names: letters, digits, ``_ . -`` (never ``.`` or ``..`` alone)."""
LABEL_PATTERN = r"^[A-Za-z0-9_.+-]+$"
"""Labels (of optimizees, teachers): as names, plus ``+`` (``dm+cl+il``)."""


def _not_dots(v: str) -> str:
    if v in (".", ".."):
        raise ValueError(f"{v!r} is not allowed as a name (it names a folder)")
    return v


Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH), AfterValidator(_not_dots)]
"""A suite or stage name: :data:`NAME_PATTERN`, at most :data:`MAX_NAME_LENGTH` characters, not ``.``/``..``."""
Label = Annotated[str, Field(pattern=LABEL_PATTERN, max_length=MAX_NAME_LENGTH), AfterValidator(_not_dots)]
"""A label: :data:`LABEL_PATTERN`, at most :data:`MAX_NAME_LENGTH` characters, not ``.``/``..``."""


# ---------------------------------------------------------------------------------------------
# horizons
# ---------------------------------------------------------------------------------------------
#: the most horizons one optimizee entry may list (each multiplies the stage's trials)
MAX_HORIZONS = 32
#: the error type of a list of horizons where one is expected (:func:`harness.config.suite.format_validation_error`
#: names the stage kind in its message)
SINGLE_HORIZON_ERROR = "single_horizon"
_EXAMPLE = {"steps": "[300, 1500]", "epochs": "[1, 5]"}


def horizon_label(steps: float | None, epochs: float | None) -> str:
    """``300 steps``, ``1 epoch``, ``2.5 epochs``; empty for the optimizee's default budget."""
    if steps is not None:
        return f"{int(steps)} step{'' if steps == 1 else 's'}"
    if epochs is not None:
        return f"{float(epochs):g} epoch{'' if epochs == 1 else 's'}"
    return ""


def task_label(optimizee: str, horizon: str) -> str:
    """One task of a leaderboard: ``mlp · 300 steps`` (the optimizee alone for its default budget)."""
    return f"{optimizee} · {horizon}" if horizon else optimizee


_HORIZON_RE = re.compile(r"^([0-9.e+-]+) (step|epoch)s?$")


def horizon_order(label: str) -> tuple[int, float, str]:
    """Sort key of a :func:`horizon_label`: the default first, then steps, then epochs, each ascending."""
    m = _HORIZON_RE.match(label or "")
    if not m:
        return (0 if not label else 3, 0.0, label or "")
    try:
        return (1 if m.group(2) == "step" else 2, float(m.group(1)), label)
    except ValueError:
        return (3, 0.0, label)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


#: the longest training run a suite may ask for, in steps and in epochs (a typo like ``1e18`` never runs)
MAX_STEPS = 10**8
MAX_EPOCHS = 10**5
_MAX_BUDGET = {"steps": MAX_STEPS, "epochs": MAX_EPOCHS}


def _is_budget(x: Any, unit: str) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
        return False
    if x > _MAX_BUDGET[unit]:
        return False
    return unit != "steps" or float(x).is_integer()


def _check_horizon_list(v: Any, unit: str) -> Any:
    """A list of horizons, refused unless it is 1 to :data:`MAX_HORIZONS` distinct positive numbers."""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number of {unit}")
    if isinstance(v, str) and not re.fullmatch(r"\s*[0-9.e+-]+\s*", v):
        raise ValueError(
            f"{_short(v)} is not a number of {unit}; give {unit}: N or a list, e.g. {_EXAMPLE[unit]}"
        )
    if isinstance(v, int | float) and not _is_budget(v, unit):
        whole = "whole " if unit == "steps" else ""
        raise ValueError(
            f"{_short(v)} is not a positive {whole}number of {unit} (at most {_MAX_BUDGET[unit]:g})"
        )
    if not isinstance(v, list):
        return v
    if not v:
        raise ValueError(f"give at least one horizon, e.g. {unit}: {_EXAMPLE[unit]}")
    if len(v) > MAX_HORIZONS:
        raise ValueError(f"{len(v)} horizons are more than {MAX_HORIZONS}; each one is a trial per optimizer")
    whole = "whole " if unit == "steps" else ""
    for x in v:
        if not _is_budget(x, unit):
            raise ValueError(
                f"{_short(x)} is not a positive {whole}number of {unit} (at most {_MAX_BUDGET[unit]:g}); give "
                f"{unit}: N or a list of distinct ones, e.g. {unit}: {_EXAMPLE[unit]}"
            )
    seen: set[float] = set()
    for x in v:
        if float(x) in seen:
            raise ValueError(f"{unit} lists {x:g} more than once; give each horizon once")
        seen.add(float(x))
    return v


class _OptimizeeBase(StrictModel):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    label: Label | None = None

    @model_validator(mode="after")
    def _budget(self) -> _OptimizeeBase:
        if getattr(self, "steps", None) is not None and getattr(self, "epochs", None) is not None:
            raise ValueError("give either steps or epochs, not both")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from harness.registry import OPTIMIZEES

        OPTIMIZEES.require(v)
        return v

    @model_validator(mode="after")
    def _kwargs_match_signature(self) -> _OptimizeeBase:
        from harness.registry import OPTIMIZEES

        if self.name not in OPTIMIZEES:
            return self
        OPTIMIZEES.check_kwargs(self.name, self.kwargs, f"optimizee {self.name!r}")
        return self

    def display(self) -> str:
        """A short label like ``mlp(dataset=digits,hidden=[50, 20])``."""
        if self.label:
            return self.label
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()) if k not in ("root", "download"))
        return f"{self.name}({inner})" if inner else self.name


class OptimizeeSpec(_OptimizeeBase):
    """One optimizee at one horizon: a registered name, its constructor kwargs and a training budget.

    A one-item list (``steps: [300]``) is that horizon; a longer list is refused: only an evaluate stage
    runs several horizons (:class:`OptimizeeHorizons`).
    """

    steps: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    epochs: float | None = Field(default=None, gt=0, le=MAX_EPOCHS)

    @field_validator("steps", "epochs", mode="before")
    @classmethod
    def _one_horizon(cls, v: Any, info: ValidationInfo) -> Any:
        unit = str(info.field_name)
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a number of {unit}")
        if not isinstance(v, list):
            return v
        if len(v) == 1:
            return v[0]
        first = v[0] if v and _is_budget(v[0], unit) else {"steps": 300, "epochs": 1}[unit]
        raise PydanticCustomError(
            SINGLE_HORIZON_ERROR,
            "{what} trains at one horizon; give {unit}: {first} (a list of horizons is for evaluate stages)",
            {"what": "this stage", "unit": unit, "first": first},
        )

    def horizon(self) -> str:
        """This spec's :func:`horizon_label` (empty for the optimizee's default budget)."""
        return horizon_label(self.steps, self.epochs)


class OptimizeeHorizons(_OptimizeeBase):
    """An evaluate stage's optimizee entry: ``steps`` or ``epochs`` is one horizon or a list of distinct
    ones (at most :data:`MAX_HORIZONS`); :meth:`horizons` gives one :class:`OptimizeeSpec` per horizon."""

    steps: Annotated[int, Field(gt=0, le=MAX_STEPS)] | list[int] | None = None
    epochs: Annotated[float, Field(gt=0, le=MAX_EPOCHS)] | list[float] | None = None

    @field_validator("steps", "epochs", mode="before")
    @classmethod
    def _horizon_list(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_horizon_list(v, str(info.field_name))

    def horizons(self) -> list[OptimizeeSpec]:
        """One single-horizon spec per horizon, in the order given (its other fields unchanged)."""
        base = self.model_dump(exclude={"steps", "epochs"})
        if isinstance(self.steps, list):
            return [OptimizeeSpec.model_validate({**base, "steps": s}) for s in self.steps]
        if isinstance(self.epochs, list):
            return [OptimizeeSpec.model_validate({**base, "epochs": e}) for e in self.epochs]
        return [OptimizeeSpec.model_validate({**base, "steps": self.steps, "epochs": self.epochs})]


#: the early-stopping schedulers a stage may name (HyperBand is synchronous: it would need brackets per task)
EARLY_STOPPING_SCHEDULERS = ("asha",)
#: the largest reduction factor (a larger one keeps only the best trial at the first rung anyway)
MAX_REDUCTION_FACTOR = 1000.0


class EarlyStopping(StrictModel):
    """``early_stopping:`` of an evaluate stage: asynchronous successive halving (ASHA) per task.

    Trials of one task (optimizee and horizon) are compared at the rungs ``grace_steps * reduction_factor**k``
    (below the horizon) by their interim training loss; at each rung the worst ``1 - 1/reduction_factor`` of
    those that reached it so far stop. Pure settings: the engine turns them into Ray Tune's ``ASHAScheduler``.
    """

    scheduler: str
    grace_steps: int = Field(ge=1, le=MAX_STEPS)
    reduction_factor: float = Field(default=3.0, gt=1.0, le=MAX_REDUCTION_FACTOR)

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v not in EARLY_STOPPING_SCHEDULERS:
            raise ValueError(
                f"unknown early-stopping scheduler {v!r}; known: {', '.join(EARLY_STOPPING_SCHEDULERS)} "
                "(HyperBand is synchronous and is not offered)"
            )
        return v
