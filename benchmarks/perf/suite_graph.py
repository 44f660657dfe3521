"""A suite run as a graph against the same suite run one stage after another, in one process.

Runs ``--suite`` (default ``benchmarks/suites/graph-smoke.yaml``: a chain of one-trial stages beside an
independent grid) twice on one Ray instance, each run in a fresh temporary workdir and MLflow store: first
with ``sequential`` (``sl2o run --sequential``), then as a graph (the default), and compares them. A tiny
untimed suite runs first, so that neither timed run pays for starting Ray's first workers.

* ``seconds_sequential``, ``seconds_graph``: wall time of each ``run_suite``; ``speedup`` their ratio.
* ``critical_path_s``, ``utilisation_graph`` (and ``utilisation_sequential``): as each suite run records them
  on its MLflow run (:func:`harness.engine.usage.suite_usage`): the longest chain of stage durations through
  the graph (the part of the wall time more CPUs could not shorten), and the trials' allocated CPU-seconds
  (wall x CPUs asked for) over the cluster's CPU-seconds in the run's wall time.
* ``leaderboards_equal``: both runs' leaderboards (:func:`harness.report.leaderboard.aggregate`) have the
  same rows (suite, optimizee, horizon, optimizer) with the same number of seeds each.

With ``--json`` the last line is ``{"seconds_sequential", "seconds_graph", "speedup", "critical_path_s",
"utilisation_graph", "leaderboards_equal"}`` (plus ``utilisation_sequential``, and ``stages_sequential`` and
``stages_graph``: each stage's seconds in each run). ``--address`` runs both on a Ray cluster (the workdirs must then be paths its nodes
share: ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "graph-smoke.yaml"


def run_once(suite: Any, workdir: Path, sequential: bool, address: str | None, log: Any) -> dict[str, Any]:
    """Run ``suite`` in ``workdir``; its wall time, its stages' and trials' MLflow times and its leaderboard."""
    from harness import tracking
    from harness.engine.runner import RunOptions, run_suite
    from harness.report import leaderboard
    from harness.stages.outputs import TAG

    uri = f"sqlite:///{workdir}/mlflow.db"
    opts = RunOptions(address=address, tracking_uri=uri, workdir=str(workdir), log=log, sequential=sequential)
    start = time.perf_counter()
    out = run_suite(suite, opts)
    wall = time.perf_counter() - start
    client = tracking.init_tracking(uri)
    runs = tracking.find_runs(client, [out.experiment_id], f"tags.`{TAG}.suite` = '{suite.name}'")

    def seconds(r: Any) -> float:
        return max(0.0, ((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000)

    stages = {
        r.data.tags[f"{TAG}.stage"]: seconds(r) for r in runs if r.data.tags.get(f"{TAG}.kind") == "stage"
    }
    usage = client.get_run(out.run_id).data.metrics  # harness.engine.usage.suite_usage, recorded by the run
    rows = leaderboard.aggregate(tracking.leaderboard_records(client, suite.name))
    board = sorted((*(str(r[k]) for k in leaderboard.GROUP), int(r["n"])) for r in rows)
    return {"wall": wall, "stages": stages, "usage": usage, "leaderboard": board}


def warmup_suite() -> Any:
    """Two tiny trials: Ray starts its first workers and imports torch before the timed runs."""
    from harness.config.suite import load_suite_dict

    stage = {
        "kind": "evaluate",
        "name": "warmup",
        "optimizees": [{"name": "quadratic_cos", "steps": 10}],
        "optimizers": [{"family": "sgd", "lr": [0.1, 0.01]}],
    }
    return load_suite_dict({"name": "graph-warmup", "stages": [stage]})


def summary(seq: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any]:
    """The JSON line from the two runs (see the module doc); critical path and utilisation as each suite run
    recorded them (:func:`harness.engine.usage.suite_usage`)."""
    return {
        "seconds_sequential": round(seq["wall"], 1),
        "seconds_graph": round(graph["wall"], 1),
        "speedup": round(seq["wall"] / graph["wall"], 3) if graph["wall"] > 0 else None,
        "critical_path_s": round(graph["usage"]["critical_path_s"], 1),
        "utilisation_graph": round(graph["usage"]["utilisation"], 3),
        "leaderboards_equal": bool(seq["leaderboard"]) and seq["leaderboard"] == graph["leaderboard"],
        "utilisation_sequential": round(seq["usage"]["utilisation"], 3),
        "stages_sequential": {k: round(v, 1) for k, v in seq["stages"].items()},
        "stages_graph": {k: round(v, 1) for k, v in graph["stages"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=SUITE, help="the suite file (default: graph-smoke.yaml)")
    ap.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the two runs' workdirs go (default: a temp folder)"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up suite")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import ray

    from harness.config.suite import load_suite
    from harness.engine.runner import init_ray

    suite = load_suite(args.suite)
    init_ray(args.address)
    cores = float(ray.cluster_resources().get("CPU", 1.0))
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.no_warmup:
        with tempfile.TemporaryDirectory(prefix="sl2o-warmup-", dir=args.workdir) as tmp:
            run_once(warmup_suite(), Path(tmp), False, args.address, lambda m: None)
    results = {}
    for mode in ("sequential", "graph"):
        with tempfile.TemporaryDirectory(prefix=f"sl2o-{mode}-", dir=args.workdir) as tmp:
            log(f"--- {suite.name}: {mode} ---")
            results[mode] = run_once(suite, Path(tmp), mode == "sequential", args.address, log)
    res = summary(results["sequential"], results["graph"])
    print(f"suite {suite.name} on {cores:g} CPUs")
    print(
        f"  one after another: {res['seconds_sequential']:8.1f} s (CPU use {res['utilisation_sequential']:.0%})"
    )
    print(f"  as a graph:        {res['seconds_graph']:8.1f} s (CPU use {res['utilisation_graph']:.0%})")
    print(f"  speedup:           {res['speedup']:8.3f}x; critical path {res['critical_path_s']:.1f} s")
    print(f"  leaderboards equal (rows and seeds): {res['leaderboards_equal']}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
