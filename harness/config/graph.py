"""A suite as a graph: each stage waits for the stages its ``from_stage``/``source`` references name.

The edges are the stages' own :meth:`~harness.config.suite.StageBase.inputs`; :class:`~harness.config.suite.Suite`
validation already refuses a reference to an unknown or later stage, so the graph has no cycle and the suite
order is one valid order. The runner starts every stage whose inputs are done; ``sl2o validate`` prints the
waves; ``--fresh`` covers the stages downstream of the one named. Pure: no Ray, no MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageGraph:
    """The stages of a suite (in suite order) and, for each, the stages it reads (its direct inputs)."""

    order: tuple[str, ...]
    needs: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, suite: Any) -> StageGraph:
        """The graph of a validated :class:`~harness.config.suite.Suite` (each input listed once, in suite order)."""
        order = tuple(s.name for s in suite.stages)
        pos = {name: i for i, name in enumerate(order)}
        needs: dict[str, tuple[str, ...]] = {}
        for s in suite.stages:
            refs = {ref for ref, _ in s.inputs()}
            unknown = sorted(r for r in refs if r not in pos or pos[r] >= pos[s.name])
            if unknown:  # validation refuses these; a graph built from an unvalidated suite says so too
                raise ValueError(f"stage {s.name!r} reads {', '.join(unknown)}, not an earlier stage")
            needs[s.name] = tuple(sorted(refs, key=pos.__getitem__))
        return cls(order, needs)

    def ready(self, done: Iterable[str], started: Iterable[str]) -> list[str]:
        """Stages not started yet whose inputs are all ``done``, in suite order."""
        done_set, started_set = set(done), set(started)
        return [n for n in self.order if n not in started_set and all(d in done_set for d in self.needs[n])]

    def downstream(self, names: Iterable[str]) -> set[str]:
        """``names`` and every stage that reads one of them, directly or through other stages."""
        out = set(names)
        for n in self.order:  # suite order is a topological order: one pass suffices
            if any(d in out for d in self.needs[n]):
                out.add(n)
        return out

    def levels(self) -> dict[str, int]:
        """Each stage's wave (1 for a stage with no inputs, else one more than its latest input's)."""
        level: dict[str, int] = {}
        for n in self.order:
            level[n] = 1 + max((level[d] for d in self.needs[n]), default=0)
        return level

    def waves(self) -> list[list[str]]:
        """The stages by wave, each wave in suite order: a wave's stages can run together once the
        earlier waves are done (the runner starts each stage as soon as its own inputs are done)."""
        level = self.levels()
        return [
            [n for n in self.order if level[n] == w] for w in range(1, max(level.values(), default=0) + 1)
        ]

    def critical_path(self, seconds: Mapping[str, float]) -> tuple[float, list[str]]:
        """The longest chain of stage durations through the graph: its total and its stages, first to last."""
        best: dict[str, tuple[float, list[str]]] = {}
        for n in self.order:
            before = max((best[d] for d in self.needs[n]), key=lambda b: b[0], default=(0.0, []))
            best[n] = (before[0] + float(seconds.get(n, 0.0)), [*before[1], n])
        return max(best.values(), key=lambda b: b[0], default=(0.0, []))

    def describe(self) -> list[str]:
        """Lines for ``sl2o validate``: each stage with the stages it waits for, then the waves."""
        width = max((len(n) for n in self.order), default=0)
        lines = [
            f"  {n:<{width}}  waits for {', '.join(self.needs[n])}"
            if self.needs[n]
            else f"  {n:<{width}}  starts at once"
            for n in self.order
        ]
        lines += [f"  wave {i}: {', '.join(w)}" for i, w in enumerate(self.waves(), start=1)]
        return lines
