"""What a suite run hands each of its stages: the options it was started with and the suite's tracking state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.cluster import Storage


@dataclass
class RunOptions:
    """How to run a suite: where Ray and MLflow are, where Tune keeps its state."""

    address: str | None = None
    tracking_uri: str | None = None
    workdir: str = "sl2o_runs"
    quiet: bool = False
    log: Callable[[str], None] = print
    #: names of stages to rerun whole (their earlier runs and Tune state are discarded), and with them every
    #: stage downstream of them (the runner adds those)
    fresh: frozenset[str] = frozenset()
    #: run the stages one after another in suite order (else as a graph: every stage whose inputs are done
    #: runs, concurrently with the others, each its own Tune experiment)
    sequential: bool = False
    #: a live display of running trials (on a terminal); otherwise only progress lines
    live: bool = False
    #: run trials that ask for GPUs on CPUs when the cluster has no GPU (else that is an error)
    allow_cpu_fallback: bool = False
    #: SIGTERM (a scheduler's or `kill`'s stop) takes the Ctrl-C path once Ray is up (Ray's own handler,
    #: installed by ``ray.init``, would kill its processes and exit mid-fit): Tune stops and saves its state
    sigterm_as_interrupt: bool = False
    #: the most trials one stage, and the suite in all, may plan (None: the defaults,
    #: :data:`harness.config.suite.MAX_STAGE_TRIALS` and :data:`~harness.config.suite.MAX_SUITE_TRIALS`)
    max_trials: int | None = None
    max_suite_trials: int | None = None


@dataclass
class SuiteContext:
    """The suite run every stage of it is recorded under, and where its state lives."""

    #: the MLflow client (a :class:`~harness.tracking.ResilientClient`)
    client: Any
    experiment_id: str
    suite_run_id: str
    tracking_uri: str
    #: the workdir as Tune storage (local path or URI)
    storage: Storage
    #: MLflow context tags and the harness version, set on every trial run
    version_tags: dict[str, str] = field(default_factory=dict)
