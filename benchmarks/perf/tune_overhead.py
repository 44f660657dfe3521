"""Time Ray Tune (and MLflow tracking) add per trial: the same tiny trials run directly and as a suite.

Prints the per-trial time of each path and their difference, measured in one process. With ``--json``
the last line is ``{"trials", "direct_s_per_trial", "suite_s_per_trial", "overhead_s_per_trial",
"ray_init_s"}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from harness.config.suite import load_suite_dict
from harness.engine.runner import RunOptions, init_ray, run_suite
from harness.stages.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lrs = [10 ** (-1 - 3 * i / max(args.trials - 1, 1)) for i in range(args.trials)]
    optimizee = {"name": "quadratic_cos", "steps": args.steps}

    t0 = time.perf_counter()
    for lr in lrs:
        evaluate(optimizee, {"family": "adam", "lr": lr}, seed=0)
    direct = (time.perf_counter() - t0) / args.trials

    t0 = time.perf_counter()
    init_ray(None)
    ray_init = time.perf_counter() - t0
    suite = load_suite_dict(
        {
            "name": "tune-overhead",
            "stages": [
                {
                    "kind": "evaluate",
                    "name": "e",
                    "optimizees": [optimizee],
                    "optimizers": [{"family": "adam", "lr": lr} for lr in lrs],
                    "seeds": [0],
                }
            ],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(tracking_uri=f"sqlite:///{tmp}/m.db", workdir=tmp, log=lambda s: None)
        out = run_suite(suite, opts)
    per_trial = out.stages["e"].seconds / args.trials
    result = {
        "trials": args.trials,
        "direct_s_per_trial": round(direct, 4),
        "suite_s_per_trial": round(per_trial, 4),
        "overhead_s_per_trial": round(per_trial - direct, 4),
        "ray_init_s": round(ray_init, 2),
    }
    print(f"{args.trials} trials of {args.steps} P1 steps")
    print(f"  direct call:       {direct * 1000:8.1f} ms per trial")
    print(
        f"  through Tune+MLflow: {per_trial * 1000:6.1f} ms per trial (stage wall time / trials, 2 in parallel)"
    )
    print(f"  ray.init:          {ray_init:8.2f} s once per suite")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
