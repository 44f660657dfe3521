"""Searches and schedulers for a stage's Ray Tune experiment (runner layer: Ray and Optuna live here).

A stage kind that proposes its trials by search returns a pure :class:`~harness.stages.base.SearchSpec` from
:meth:`StageKind.search <harness.stages.base.StageKind.search>`; :func:`tune_search` turns it into Ray Tune's
``OptunaSearch``, which proposes ``num_samples`` trials (``max_concurrent`` at a time) instead of a grid. Each
proposal's config has a grid trial's shape, ``{"kind": name, "trial": <trial model>}``, and the searcher is
saved with the experiment, so ``Tuner.restore`` resumes a search without redoing finished trials.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.registry import STAGES
from harness.stages.base import SearchSpec, StageKind

__all__ = ["SearchPlan", "tune_search"]


@dataclass
class SearchPlan:
    """How the runner builds a stage's Tuner when it is not a plain grid.

    Attributes:
        param_space: the Tuner's ``param_space`` (a search's: ``{"kind"}``; the searcher adds ``"trial"``).
        num_samples: the number of trials the stage runs (its progress total, and what "finished" means).
        tune_config: extra ``tune.TuneConfig`` arguments (``search_alg``, ``num_samples``, ``scheduler``).
    """

    param_space: dict[str, Any]
    num_samples: int
    tune_config: dict[str, Any] = field(default_factory=dict)


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (what ``Study.ask(fixed_distributions)`` does)."""
    import optuna

    d = optuna.distributions
    if isinstance(dist, d.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported Optuna distribution for {name!r}: {type(dist).__name__}")


class _Proposal:
    """OptunaSearch's define-by-run space: sample every parameter, return the trial model that carries them.

    Picklable (Ray Tune pickles the searcher with its experiment state); the stage kind is looked up by name.
    """

    def __init__(self, kind: str, base: Any, space: Mapping[str, Any]) -> None:
        self.kind = kind
        self.base = base
        self.space = dict(space)

    def __call__(self, trial: Any) -> dict[str, Any]:
        values = {name: _suggest(trial, name, dist) for name, dist in self.space.items()}
        return {"trial": STAGES.get(self.kind).searched_trial(self.base, values, int(trial.number))}


def optuna_search(kind: StageKind[Any, Any], spec: SearchSpec) -> Any:
    """Ray Tune's ``OptunaSearch`` for ``spec``: its sampler, its start points evaluated first (a trial that early
    stopping ends is told to Optuna as pruned: :mod:`harness.engine.optuna_pruning`)."""
    import optuna

    from harness.engine.optuna_pruning import PruningOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the in-trial study: no per-trial info lines
    if spec.num_samples < 1:
        raise ValueError(
            f"stage kind {kind.name!r}: a search needs at least one trial, got {spec.num_samples}"
        )
    if spec.mode not in ("min", "max"):
        raise ValueError(f"stage kind {kind.name!r}: search mode must be 'min' or 'max', got {spec.mode!r}")
    return PruningOptunaSearch(
        space=_Proposal(kind.name, spec.base, spec.space),
        metric=spec.metric,
        mode=spec.mode,
        sampler=spec.sampler,
        points_to_evaluate=[dict(p) for p in spec.start] or None,
    )


def _readable(trial: Any, folder: Path) -> Any:
    """``trial`` with its staged input files (:func:`harness.cluster.stage_inputs`) copied under ``folder``."""
    from harness.cluster import localize_inputs

    if not isinstance(trial, BaseModel):
        return trial
    data = trial.model_dump(exclude_unset=True)
    local = localize_inputs(data, folder)
    return trial if local == data else type(trial).model_validate(local)


def tune_search(kind: StageKind[Any, Any], stage: Any, trials: list[Any]) -> SearchPlan | None:
    """The search plan of a stage, or None: run ``trials`` as the usual grid.

    ``trials`` are the stage's planned trials (for a search, the one base trial its proposals start from).
    """
    with tempfile.TemporaryDirectory(prefix="sl2o-search-") as tmp:
        # with a storage-URI workdir the trials name staged inputs: the kind reads local copies here
        local = [_readable(t, Path(tmp)) for t in trials]
        spec = kind.search(stage, local)
    if spec is None:
        return None
    # proposals start from the trial as the workers get it (staged inputs stay URIs)
    spec.base = next((t for t, c in zip(trials, local, strict=True) if c is spec.base), spec.base)
    return SearchPlan(
        # the trial models come from the searcher only: Tune swaps objects in a param space for placeholders
        # that a suggested config could not replace
        param_space={"kind": kind.name},
        num_samples=spec.num_samples,
        tune_config={"search_alg": optuna_search(kind, spec), "num_samples": spec.num_samples},
    )
