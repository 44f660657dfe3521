"""Share the cluster's CPUs among the stages a graph runs at once (engine layer: Ray Tune lives here).

Ray Tune reuses a finished trial's actor for the next trial of the same experiment (``reuse_actors``: the
process keeps torch and the data loaded, which for short grid trials is most of their cost). So a stage that
got a CPU keeps it until its last trial, and the first stage to fill the cluster (the transfer panel's
1,680-trial grid) held every core while the teacher the rest of the suite waits for never started.

:class:`FairShare` decides how many trials each running stage may have at once: the cluster's CPUs go to the
stages that still have trials to run, in priority order (more stages downstream first, so the critical path
is never kept waiting behind a leaf), each stage at most what it can use, every CPU to someone while anyone
has work (max-min fair). Each stage's trial source is a :class:`Gate` (:class:`GatedVariantGenerator` for a
grid, :class:`GatedLimiter` around a search) that proposes no new trial while the stage runs its share; its
cached actor then has no trial to take and Tune releases it (the controllers of a graph keep no idle actor:
:func:`sharing`), and the CPU goes to the stage whose turn it is.
The shares are recomputed whenever a stage starts or ends, or one of its trials ends; a stage running no more
than its share may propose one trial beyond it (:data:`LOOKAHEAD`), so Tune can hand it the process of the
trial that ends next. A stage's own
``max_concurrent`` still caps it. GPUs are not apportioned: a trial that also needs a GPU waits for one as
before. ``--sequential`` runs one stage at a time, which then gets the whole cluster.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback
from ray.tune.execution import tune_controller
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.utils.object_cache import _ObjectCache

__all__ = [
    "FairShare",
    "GatedLimiter",
    "GatedVariantGenerator",
    "TrialCounter",
    "active",
    "allot",
    "gate_for",
    "restored_gate",
    "sharing",
]

#: the trials a searched stage may have at once when neither its ``max_concurrent`` nor a share limits it
UNLIMITED = 1_000_000
#: live trials a stage may have beyond its share while it runs no more than its share: one proposed ahead,
#: so that the process of the trial that ends next is reused for it (without it every trial starts a new
#: process: the graph-smoke grid alone took 5x longer, the quick panel 3.5x). Never while it runs more than its
#: share: reusing its actors would keep the CPUs another stage's share gives it (the graph-smoke teacher
#: waited for the grid and took 1.5x longer)
LOOKAHEAD = 1


class _Gated:
    """The movable limit of a trial source: ``allowed`` live trials at most (None: no gate). It is never
    saved with the experiment's searcher state (a resumed stage gets its share anew, not a stale one)."""

    allowed: int | None = None

    def get_state(self) -> Any:
        state = super().get_state()  # type: ignore[misc]
        if isinstance(state, dict):
            state.pop("allowed", None)
        return state

    def set_state(self, state: Any) -> None:
        allowed = self.allowed
        super().set_state(state)  # type: ignore[misc]
        self.allowed = allowed


class GatedVariantGenerator(_Gated, BasicVariantGenerator):
    """Tune's grid generator that proposes no trial while ``allowed`` trials of it are live (its own
    ``max_concurrent`` still applies). Picklable: Tune saves it with the experiment."""

    def next_trial(self) -> Any:
        if self.allowed is not None and len(self._live_trials) >= self.allowed:
            return None
        return super().next_trial()


class GatedLimiter(_Gated, ConcurrencyLimiter):
    """Tune's ``ConcurrencyLimiter`` around a searcher, with a second, movable limit ``allowed``; 0 proposes
    nothing until the limit moves."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.allowed is not None and len(self.live_trials) >= self.allowed:
            return None
        return super().suggest(trial_id)


Gate = GatedVariantGenerator | GatedLimiter


def gate_for(search_alg: Searcher | None, max_concurrent: int | None) -> Gate:
    """The stage's trial source: a gated grid generator, or ``search_alg`` behind a gated limiter; either
    way capped at the stage's own ``max_concurrent`` (None: uncapped)."""
    if search_alg is None:
        return GatedVariantGenerator(max_concurrent=max_concurrent or 0)
    return GatedLimiter(search_alg, max_concurrent=max_concurrent or UNLIMITED)


def restored_gate(tuner: Any) -> Gate | None:
    """The gate a restored Tuner's experiment was saved with (None: a stage first run without one). Tune
    keeps no public handle on it: it is the search algorithm of the restored Tuner's own config."""
    config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    alg = getattr(config, "search_alg", None)
    return alg if isinstance(alg, GatedVariantGenerator | GatedLimiter) else None


@dataclass
class _Stage:
    gate: Gate | None
    cpus_per_trial: float
    cap: int | None
    priority: tuple[int, int]
    remaining: int
    running: int = 0


def allot(cpus: float, stages: dict[str, tuple[float, int, tuple[int, int]]]) -> dict[str, int]:
    """Trials each stage may run at once: ``stages[name] = (cpus per trial, trials it can use now,
    priority)``. CPUs go one trial at a time, round-robin over the stages in priority order (highest first),
    while a stage can use more and the CPUs last; a stage that could not get one trial gets 0. Pure: the
    policy, tested on its own."""
    order = sorted(stages, key=lambda n: stages[n][2], reverse=True)
    out = {n: 0 for n in stages}
    left = float(cpus)
    progress = True
    while progress:
        progress = False
        for name in order:
            per, want, _ = stages[name]
            if out[name] < want and per <= left + 1e-9:
                out[name] += 1
                left -= per
                progress = True
    return out


#: the share of the graph running in this driver (None: stages run one at a time, or in Ray Client mode,
#: where Tune's loops run on the head node): :class:`TrialCounter` callbacks, which Tune pickles with the
#: experiment, find it here
_ACTIVE: FairShare | None = None
#: seconds the cluster's CPU count is cached between rebalances
CPUS_TTL_S = 10.0


def active() -> FairShare | None:
    """The share of the graph running in this driver, if any."""
    return _ACTIVE


class _NoIdleKeep(_ObjectCache):
    """Tune's actor cache without its "keep one idle actor" rule: a stage its share holds back has no trial
    for its finished trial's actor, which must then go (it holds its CPU) for the stage whose turn it is."""

    def __init__(self, may_keep_one: bool = True) -> None:
        super().__init__(may_keep_one=False)


@contextlib.contextmanager
def sharing(priorities: dict[str, tuple[int, int]], cpus: Callable[[], float]) -> Iterator[FairShare]:
    """Make a :class:`FairShare` the driver's active one while a graph runs, and give the Tune controllers
    created meanwhile an actor cache that keeps no idle actor (:class:`_NoIdleKeep`) and a short wait for a
    proposal (:func:`_short_wait`); set before any stage thread starts, put back after the last ends."""
    global _ACTIVE
    share = FairShare(priorities, cpus)
    original = tune_controller._ObjectCache  # pyright: ignore[reportPrivateImportUsage]
    controller = tune_controller.TuneController
    update = controller._update_trial_queue
    saved_env = {k: os.environ.get(k) for k in QUIET_WAIT_ENV}
    tune_controller._ObjectCache = _NoIdleKeep  # type: ignore[misc]
    controller._update_trial_queue = _short_wait(update)  # type: ignore[method-assign]
    os.environ.update(dict.fromkeys(QUIET_WAIT_ENV, "1e9"))
    _ACTIVE = share
    try:
        yield share
    finally:
        _ACTIVE = None
        tune_controller._ObjectCache = original  # type: ignore[misc]
        controller._update_trial_queue = update  # type: ignore[method-assign]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Tune's "insufficient resources" check: after 60 s without a trial it warns that the cluster cannot run the
#: stage, and for a stage its share held back from the start (no trial yet) it raises IndexError reading its
#: first trial. Waiting for a share is not a lack of resources: the check is put off while a graph runs.
QUIET_WAIT_ENV = (
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER",
)


#: the longest a controller waits in one step for its next proposal while a graph runs (Tune's own: 600 s)
PROPOSAL_WAIT_S = 1


def _short_wait(update: Callable[..., bool]) -> Callable[..., bool]:
    """Tune's ``_update_trial_queue`` waiting at most :data:`PROPOSAL_WAIT_S` for a proposal. A controller
    with no trial running waits in it for its search's next proposal, up to 600 s, without ending its step;
    a stage its share holds back would then keep its finished trial's actor (released at a step's end) and
    its CPU for those 600 s, while the stages it waits for could not start (seen: the quick panel stalled)."""

    def wrapped(self: Any, blocking: bool = False, timeout: int = 600) -> bool:
        return update(self, blocking=blocking, timeout=min(timeout, PROPOSAL_WAIT_S))

    return wrapped


class FairShare:
    """The shares of the stages one graph runs at once (module docstring). Thread-safe: each stage's Tune
    loop runs in its own thread of the driver, and all of them call in here. ``priorities`` orders the
    stages (higher first); ``cpus`` reads the cluster's CPU count (cached :data:`CPUS_TTL_S` seconds)."""

    def __init__(self, priorities: dict[str, tuple[int, int]], cpus: Callable[[], float]) -> None:
        self._priorities = dict(priorities)
        self._read_cpus = cpus
        self._cpus: tuple[float, float] = (-math.inf, 0.0)  # (read at, value)
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}

    def join(
        self, name: str, gate: Gate | None, *, cpus_per_trial: float, trials: int, cap: int | None
    ) -> None:
        """Register a stage about to fit ``trials`` trials behind ``gate`` (None: a source without a gate,
        e.g. a stage first run before this runner existed: it takes what Ray gives it, and its trials still
        count). Call :meth:`leave` when its fit returns."""
        with self._lock:
            self._stages[name] = _Stage(
                gate,
                max(float(cpus_per_trial), 1e-6),
                cap,
                self._priorities.get(name, (0, 0)),
                max(int(trials), 0),
            )
            self._rebalance()

    def leave(self, name: str) -> None:
        """The stage's fit returned: its CPUs go to the others."""
        with self._lock:
            st = self._stages.pop(name, None)
            if st is not None and st.gate is not None:
                st.gate.allowed = None
            self._rebalance()

    def shares(self) -> dict[str, int | None]:
        """Each registered stage's current limit (for logs and tests)."""
        with self._lock:
            return {n: None if s.gate is None else s.gate.allowed for n, s in self._stages.items()}

    def _event(self, name: str, started: int = 0, ended: int = 0) -> None:
        with self._lock:
            st = self._stages.get(name)
            if st is None:
                return
            st.running = max(0, st.running + started - ended)
            st.remaining = max(0, st.remaining - ended)
            self._rebalance()

    def _rebalance(self) -> None:
        """Recompute every stage's limit (the lock is held)."""
        if not self._stages:
            return
        now = time.monotonic()
        if now - self._cpus[0] > CPUS_TTL_S:
            self._cpus = (now, float(self._read_cpus()))
        cpus = self._cpus[1]
        if not math.isfinite(cpus) or cpus <= 0:
            return
        wants = {}
        for name, st in self._stages.items():
            want = max(st.remaining, st.running)
            if st.cap is not None:
                want = min(want, st.cap)
            wants[name] = (st.cpus_per_trial, want, st.priority)
        shares = allot(cpus, wants)
        if not any(
            shares.values()
        ):  # no trial fits the cluster's CPUs: let the first stage try (Ray decides)
            first = max(wants, key=lambda n: wants[n][2])
            shares[first] = 1 if wants[first][1] else 0
        for name, n in shares.items():
            st = self._stages[name]
            if st.gate is None:
                continue
            if wants[name][1] == 0:
                # a stage with no trial left is never gated: its source must reach its end, or Tune would
                # wait for one more proposal
                st.gate.allowed = None
            elif n and st.running <= n:
                st.gate.allowed = n + LOOKAHEAD  # within its share: the next trial waits for a reused actor
            else:
                st.gate.allowed = n  # over it (or none): its finishing trials' actors go


class TrialCounter(Callback):
    """Reports a stage's trial starts and ends to the driver's active :class:`FairShare` (none: nothing).
    Holds only the stage's name, so Tune can pickle it with the experiment and a resumed stage reports too."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def _event(self, started: int = 0, ended: int = 0) -> None:
        share = active()
        if share is not None:
            share._event(self.stage, started=started, ended=ended)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._event(started=1)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._event(ended=1)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._event(ended=1)
