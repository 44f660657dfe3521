"""What a suite run used: its critical path through the stage graph and how busy it kept the cluster's CPUs,
recorded on the suite's MLflow run (``sl2o run`` prints them; ``benchmarks/perf/suite_graph.py`` reads them)."""

from __future__ import annotations

from collections.abc import Mapping

from harness.config.graph import StageGraph
from harness.config.suite import Suite
from harness.stages.outputs import CostKey, StageOutcome


def suite_usage(
    suite: Suite, outcomes: Mapping[str, StageOutcome], cluster_cpus: float, wall_s: float
) -> dict[str, float]:
    """The suite run's usage figures, over the stages this run ran (a reused stage took no time):

    * ``critical_path_s``: the longest chain of stage durations through the graph, the least wall time the
      run could have taken with unlimited CPUs;
    * ``cpu_allocated_s``: trial wall seconds x the CPUs each trial held; ``utilisation``: that over
      ``cluster_cpus x wall_s``, the share of the cluster's CPU time the run kept allocated;
    * ``cpu_used_s``: the CPU seconds the trials' processes used (:class:`CostKey`), what they did with it.

    A stage resumed after an interruption counts the trials its earlier run finished too.
    """
    graph = StageGraph.of(suite)
    ran = {name: o for name, o in outcomes.items() if not o.reused}
    critical, _ = graph.critical_path({name: o.seconds for name, o in ran.items()})
    per_trial = {s.name: suite.stage_resources(s).cpus_per_trial for s in suite.stages}
    allocated = used = 0.0
    for name, o in ran.items():
        for t in o.trials:
            allocated += float(t.metrics.get(CostKey.WALL, 0.0)) * float(per_trial.get(name, 1.0))
            used += float(t.metrics.get(CostKey.CPU, 0.0))
    capacity = cluster_cpus * wall_s
    return {
        "wall_s": wall_s,
        "critical_path_s": critical,
        "cpu_allocated_s": allocated,
        "cpu_used_s": used,
        "utilisation": allocated / capacity if capacity > 0 else 0.0,
    }
