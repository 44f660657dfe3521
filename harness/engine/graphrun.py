"""Run a suite's stages as a graph: every stage whose inputs are done runs, each in its own thread, each its
own Ray Tune experiment (:func:`harness.engine.stage.run_stage`) sharing the cluster.

Why threads: ``Tuner.fit`` runs Tune's controller loop in the calling thread and spends its time waiting on
Ray, so several loops in one driver share one Ray connection, one MLflow client
(:class:`~harness.tracking.ResilientClient`, whose writes go through one thread-safe queue per URI) and one
process's state; each stage keeps its own Tune state, stage run and :class:`~harness.tracking.TrialTracker`.

Ctrl-C: Tune catches SIGINT only when ``fit`` runs in the main thread (``ray.tune.tune._setup_signal_catching``
installs its handler there and nowhere else); in a stage thread its loop would never see it. So while the
graph runs, that function hands each stage thread's loop one shared event instead, which the main thread sets
on Ctrl-C (or SIGTERM, see :func:`harness.engine.runner.interrupt_on_sigterm`): every running loop then ends
as Tune's own handler would end it (a last save of its state), each stage is reported interrupted, and the
rerun resumes them all. A second Ctrl-C stops waiting for them.

Resource sharing: :mod:`harness.engine.fairshare` gives each running stage its share of the cluster's CPUs
(the critical path first), :func:`cap_pending_trials` keeps Ray's queue short, and a stage's
``max_concurrent`` caps it (docs/suites.md).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from harness.config.graph import StageGraph
from harness.config.suite import Suite
from harness.engine import fairshare
from harness.engine.context import RunOptions, SuiteContext
from harness.engine.errors import StageFailed, StageInputError, SuiteInterrupted
from harness.engine.stage import run_stage
from harness.stages.outputs import StageOutcome

#: what a stage's thread hands back: its outcome or what it raised
_Result = tuple[str, "StageOutcome | BaseException"]
#: how a stage that cannot finish ends without stopping the others (its dependents do not start)
STAGE_ERRORS = (StageFailed, StageInputError)


@contextlib.contextmanager
def tune_stop_event() -> Iterator[threading.Event]:
    """While the ``with`` block runs, a ``Tuner.fit`` called outside the main thread stops when the yielded
    event is set, as one in the main thread stops on SIGINT (see the module doc)."""
    import ray.tune.tune as tune_run

    original = getattr(tune_run, "_setup_signal_catching", None)
    if original is None:  # a Ray whose Tune loop we cannot reach: a stage thread could not be stopped
        raise RuntimeError(
            "this Ray version's Tune has no ray.tune.tune._setup_signal_catching: stages cannot run "
            "concurrently with a working Ctrl-C; run with --sequential"
        )
    event = threading.Event()

    def setup() -> threading.Event:
        return original() if threading.current_thread() is threading.main_thread() else event

    tune_run._setup_signal_catching = setup  # pyright: ignore[reportPrivateImportUsage]
    try:
        yield event
    finally:
        tune_run._setup_signal_catching = original  # pyright: ignore[reportPrivateImportUsage]


def _cluster_cpus() -> float:
    """The cluster's CPUs now (an autoscaling cluster's count changes)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cap_pending_trials(cluster_cpus: float) -> None:
    """Keep each stage's queue of waiting placement groups to what the cluster can run at once.

    Each Tune controller asks Ray for one placement group per trial it wants to start; for a grid it keeps up
    to ``TUNE_MAX_PENDING_TRIALS_PG`` of them pending (``auto``: at least 200, for autoscaling). Ray schedules
    pending groups with no regard for which controller asked, so a 240-trial grid with 200 pending groups would
    take nearly every CPU that frees while a chain stage waits with one. Capping each controller's pending
    groups at the cluster's CPU count makes the stages take freed CPUs about in turn (the user's own
    setting of the variable wins); ``max_concurrent`` on a stage caps its running trials outright.
    """
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, int(cluster_cpus))))


def run_graph(
    suite: Suite,
    graph: StageGraph,
    ctx: SuiteContext,
    opts: RunOptions,
    outcomes: dict[str, StageOutcome],
    record: Callable[[dict[str, StageFailed]], None],
) -> dict[str, BaseException]:
    """Run every stage of ``graph`` once its inputs are done, concurrently; fill ``outcomes`` as stages
    finish and call ``record`` (main thread) after each.

    A stage that fails (:data:`STAGE_ERRORS`) does not stop the others: the stages downstream of it do not
    start, the rest finish. Returns those errors by stage; anything else a stage raises, and Ctrl-C, stops
    every running stage (their Tune state saved) and is raised once they have ended (Ctrl-C as
    :class:`SuiteInterrupted`).
    """
    results: queue.Queue[_Result] = queue.Queue()
    running: dict[str, threading.Thread] = {}
    errors: dict[str, BaseException] = {}
    blocked: set[str] = set()
    stages = {s.name: s for s in suite.stages}

    def stage_thread(name: str, stop: threading.Event) -> None:
        try:
            if stop.is_set():
                raise SuiteInterrupted(f"stage {name!r} did not start: the suite was interrupted")
            inputs = stage_inputs(graph, name, outcomes)
            results.put((name, run_stage(suite, stages[name], inputs, ctx, opts)))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises or records it
            results.put((name, err))

    priorities = {n: (len(graph.downstream([n])) - 1, -i) for i, n in enumerate(graph.order)}
    with tune_stop_event() as stop, fairshare.sharing(priorities, _cluster_cpus):
        try:
            while True:
                for name in graph.ready(outcomes, [*outcomes, *running, *errors, *blocked]):
                    thread = threading.Thread(
                        target=stage_thread, args=(name, stop), name=f"sl2o-stage-{name}", daemon=True
                    )
                    running[name] = thread
                    thread.start()
                if not running:
                    return errors
                name, res = _next(results)
                running.pop(name).join()
                if isinstance(res, StageOutcome):
                    outcomes[name] = res
                elif isinstance(res, STAGE_ERRORS):
                    errors[name] = res
                    skipped = [n for n in graph.order if n in graph.downstream([name]) - {name} - blocked]
                    blocked.update(skipped)
                    for n in skipped:
                        opts.log(f"[{n}] not started: it needs stage {name!r}, which did not finish")
                else:
                    raise res
                record({n: e for n, e in errors.items() if isinstance(e, StageFailed)})
        except BaseException as err:
            stop.set()  # every running Tune loop ends as on Ctrl-C (its state saved)
            ended = _wait_for(running, results, outcomes, opts)
            record({n: e for n, e in errors.items() if isinstance(e, StageFailed)})
            if isinstance(err, KeyboardInterrupt | SuiteInterrupted):
                names = ", ".join(n for n in graph.order if n in ended) or "none running"
                raise SuiteInterrupted(
                    f"suite {suite.name!r} was interrupted (stages stopped: {names}); "
                    "rerun the same command to resume it"
                ) from None
            raise


def _next(results: queue.Queue[_Result]) -> _Result:
    """The next stage result (waiting in short steps, so that Ctrl-C reaches the main thread at once)."""
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            continue


def _wait_for(
    running: dict[str, threading.Thread],
    results: queue.Queue[_Result],
    outcomes: dict[str, StageOutcome],
    opts: RunOptions,
) -> list[str]:
    """After a stop: wait for the running stages to end (a stage that finished meanwhile counts as done);
    the names of those that ended unfinished. A second Ctrl-C stops waiting."""
    ended: list[str] = []
    if running:
        opts.log(
            f"stopping {len(running)} running stage(s): {', '.join(running)} (their Tune state is saved)"
        )
    try:
        while running:
            name, res = _next(results)
            running.pop(name).join()
            if isinstance(res, StageOutcome):
                outcomes[name] = res
            else:
                ended.append(name)
    except KeyboardInterrupt:
        opts.log(
            f"not waiting for {', '.join(running)}: their Tune state may be unsaved (the rerun still resumes)"
        )
        ended.extend(running)
    return ended


def stage_inputs(graph: StageGraph, name: str, outcomes: dict[str, Any]) -> dict[str, Any]:
    """The outcomes a stage reads: those of its own inputs only (its key covers their keys, not the whole
    suite's), the same whichever order the stages ran in."""
    return {d: outcomes[d] for d in graph.needs[name]}
