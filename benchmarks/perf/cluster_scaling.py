"""How an evaluate stage scales from a 1-node to a 2-node Ray cluster, on this machine.

The same evaluate stage (``--trials`` trials of equal size: Adam on P1 for ``--steps`` steps, about 5
seconds each) runs through ``sl2o run --address`` on a real 1-node cluster with 1 CPU and on a real
2-node cluster with 1 CPU per node (``ray start`` processes on 127.0.0.2/127.0.0.3, see
``harness/testing/local_cluster.py``). Prints each cluster's stage time and trial throughput, the speedup, and how
many trials each node ran (from Tune's ``node_ip``). With ``--json`` the last line is
``{"trials", "nodes_used", "speedup", "seconds_1node", "seconds_2node"}``.

Stage time is the runner's own ``[eval] finished: ... Xs`` (Tune experiment, trials and tracking; not
Python start-up or Ray connection). On a shared or 2-core machine the driver, the GCS and both nodes
compete for the same cores, so the speedup measured there is a lower bound. The driver's work per trial
(results, tracking) takes its share of those cores whatever the trial's length: on a quiet 2-core machine
24 trials of about 5 s (the default) gave 1.78x, of about 2 s (``--steps 15000``) 1.57x.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from harness.testing.local_cluster import LocalCluster

STAGE = "eval"


def _finished_line(stage: str) -> re.Pattern[str]:
    return re.compile(rf"^\[{re.escape(stage)}\] finished: (\d+) trials ok, (\d+) errored, ([0-9.]+)s$", re.M)


def suite(trials: int, steps: int) -> dict[str, Any]:
    """An evaluate stage of ``trials`` equal trials: Adam at fixed lrs x seeds (8 lrs at most)."""
    n_lr = min(8, trials)
    lrs = [round(10 ** (-2 - i / n_lr), 6) for i in range(n_lr)]
    seeds = list(range(-(-trials // n_lr)))
    optimizers = [{"family": "adam", "lr": lr} for lr in lrs]
    assert len(optimizers) * len(seeds) >= trials
    return {
        "name": "cluster-scaling",
        "resources": {"cpus_per_trial": 1},
        "stages": [
            {
                "kind": "evaluate",
                "name": STAGE,
                "optimizees": [{"name": "quadratic_cos", "steps": steps}],
                "optimizers": optimizers,
                "seeds": seeds,
                "log_every": max(1, steps // 10),
            }
        ],
    }


def n_trials(data: dict[str, Any]) -> int:
    st = data["stages"][0]
    return len(st["optimizers"]) * len(st["seeds"]) * len(st["optimizees"])


def stage_seconds(output: str, stage: str = STAGE) -> tuple[int, int, float]:
    """``(ok, errored, seconds)`` from the runner's ``[<stage>] finished: ...`` line."""
    m = _finished_line(stage).search(output)
    if m is None:
        raise RuntimeError(f"no '[{stage}] finished' line in the output:\n{output[-3000:]}")
    return int(m.group(1)), int(m.group(2)), float(m.group(3))


def trials_per_node(result_lines: list[str]) -> dict[str, int]:
    """How many trials each node ran: the ``node_ip`` of each trial's last Tune result."""
    last: dict[str, str] = {}
    for line in result_lines:
        if line.strip():
            r = json.loads(line)
            if r.get("trial_id") and r.get("node_ip"):
                last[r["trial_id"]] = r["node_ip"]
    return dict(sorted(Counter(last.values()).items()))


def summary(trials: int, one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    return {
        "trials": trials,
        "nodes_used": len(two["per_node"]),
        "speedup": round(one["seconds"] / two["seconds"], 3) if two["seconds"] > 0 else None,
        "seconds_1node": round(one["seconds"], 2),
        "seconds_2node": round(two["seconds"], 2),
    }


def run_on(nodes: int, data: dict[str, Any], log: Any = print, stage: str = STAGE) -> dict[str, Any]:
    """Start a ``nodes``-node cluster (1 CPU each), run the suite on it, stop it; ``stage``'s figures."""
    with (
        tempfile.TemporaryDirectory(prefix="sl2o-scaling-") as tmp,
        LocalCluster(nodes=nodes, cpus_per_node=1) as c,
    ):
        folder = Path(tmp)
        (folder / "suite.yaml").write_text(yaml.safe_dump(data))
        cmd = [sys.executable, "-m", "harness.cli", "run", str(folder / "suite.yaml"), "--address", c.address]
        cmd += [
            "--workdir",
            str(folder / "wd"),
            "--tracking-uri",
            f"sqlite:///{folder}/m.db",
            "--no-leaderboard",
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=folder, env=c.env(), capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"sl2o run on {nodes} node(s) failed:\n{(out.stdout + out.stderr)[-4000:]}")
        ok, errored, seconds = stage_seconds(out.stdout, stage)
        results = (folder / "wd").rglob("result.json")
        lines = [ln for f in results if f"/{stage}-" in str(f) for ln in f.read_text().splitlines()]
        per_node = trials_per_node(lines)
    res = {
        "nodes": nodes,
        "ok": ok,
        "errored": errored,
        "seconds": seconds,
        "wall": wall,
        "per_node": per_node,
    }
    log(
        f"{nodes} node(s) x 1 CPU: {ok} trials in {seconds:.1f}s ({ok / seconds:.2f} trials/s; "
        f"command {wall:.1f}s); trials per node: {per_node}"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24, help="trials in the stage (>= 24 for the figure)")
    ap.add_argument("--steps", type=int, default=40000, help="P1 steps per trial (40000: about 5 s)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    data = suite(args.trials, args.steps)
    trials = n_trials(data)
    one = run_on(1, data)
    two = run_on(2, data)
    res = summary(trials, one, two)
    print(f"speedup 2 nodes vs 1: {res['speedup']}x ({res['nodes_used']} node(s) used)")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
