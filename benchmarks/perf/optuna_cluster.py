"""An Optuna meta_tune stage spread over a real 2-node Ray cluster: which node ran each Optuna trial.

A ``meta_tune`` stage with ``method: optuna``, ``search: tune`` (each Optuna trial its own Ray Tune trial,
proposed by Ray Tune's ``OptunaSearch``) and ``max_concurrent: 2`` tunes an SGD equation's step size on a
P1 task, through ``sl2o run --address`` on a 2-node cluster with 1 CPU per node (``ray start`` processes on
127.0.0.2/127.0.0.3, see ``harness/testing/local_cluster.py``). Prints the stage's time and how many trials each node
ran (from Tune's ``node_ip``). With ``--json`` the last line is
``{"trials", "max_concurrent", "nodes_used", "per_node", "seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_scaling import run_on  # noqa: E402

from harness.symbolic.families import sgd_equation  # noqa: E402

STAGE = "tune"


def suite(eq_file: Path, trials: int, steps: int, max_concurrent: int) -> dict[str, Any]:
    """One meta_tune stage: ``trials`` Optuna (TPE) trials as Tune trials, ``max_concurrent`` at a time."""
    return {
        "name": "optuna-cluster",
        "resources": {"cpus_per_trial": 1},
        "stages": [
            {
                "kind": "meta_tune",
                "name": STAGE,
                "equation": str(eq_file),
                "optimizee": {"name": "quadratic_cos", "steps": steps},
                "method": "optuna",
                "search": "tune",
                "max_concurrent": max_concurrent,
                "settings": {"n_trials": trials, "sampler": "tpe", "eval_seeds": [7]},
            }
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12, help="Optuna trials in the stage")
    ap.add_argument("--steps", type=int, default=5000, help="P1 steps per trial")
    ap.add_argument("--max-concurrent", type=int, default=2, help="Optuna trials running at once")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sl2o-optuna-cluster-") as tmp:
        eq_file = sgd_equation(0.01).save(Path(tmp) / "sgd.json")
        data = suite(eq_file, args.trials, args.steps, args.max_concurrent)
        res = run_on(2, data, stage=STAGE)
    out = {
        "trials": res["ok"],
        "max_concurrent": args.max_concurrent,
        "nodes_used": len(res["per_node"]),
        "per_node": res["per_node"],
        "seconds": round(res["seconds"], 2),
    }
    print(f"{out['trials']} Optuna trials on {out['nodes_used']} node(s): {out['per_node']}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
