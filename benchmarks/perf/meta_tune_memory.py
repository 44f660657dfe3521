"""Peak memory of meta-tuning (gradient, unroll K = 5/10/20; Optuna) against plain Adam training of the same MLP.

Each configuration runs in its own subprocess (peak RSS is per process). A worker imports everything, builds the
optimizee (dataset loaded, model built), records its RSS, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs the configuration, and reads ``VmHWM`` from ``/proc/self/status``: the
difference is the peak memory the run itself added on top of the process baseline (Python, torch, the data). On
CUDA (``--device cuda``) the worker reports ``torch.cuda.max_memory_allocated`` instead. Ratios are taken
against the ``adam`` configuration (``torch.optim.Adam`` training for the same number of steps).

Configurations: ``adam`` (plain training), ``symbolic`` (plain training with SymbolicOptimizer running the
equation), ``gradient_K{K}`` (:func:`harness.stages.meta_tune.meta_tune_gradient` with unroll K over the same
steps), ``optuna`` (:func:`~harness.stages.meta_tune.meta_tune_optuna`, ``--trials`` trials of the same
length). With ``--json`` the last stdout line is a JSON list of ``{"config", "peak_mb", "added_mb",
"added_ratio_vs_adam", "peak_ratio_vs_adam"}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import reset_peak, status_kb  # noqa: E402 - a sibling module of the benchmarks


def worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration in this process and measure it."""
    import gc

    import torch

    from harness.stages.meta_tune import meta_tune_gradient, meta_tune_optuna, run_training
    from harness.stages.problems import build_problem
    from harness.symbolic.families import adam_equation, eq6

    torch.set_num_threads(1)
    optimizee = {
        "name": "mlp",
        # gradient meta-tuning measures its meta-loss on the val split (held out of training for every config)
        "kwargs": {
            "dataset": args.dataset,
            "hidden": args.hidden,
            "batch_size": args.batch_size,
            "val_fraction": 0.1,
        },
        "steps": args.steps,
    }
    eq = eq6(("m_hat", "g_hat"), L=2) if args.equation == "eq6" else adam_equation()
    problem = build_problem(optimizee, 0, args.device)
    n_params = problem.num_params()
    cuda = args.device.startswith("cuda")
    gc.collect()
    base_kb = status_kb("VmRSS")
    reset = reset_peak()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()

    if config == "adam":
        model = problem.module()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
        batches = problem.batches("train")
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            problem.module_loss(model, next(batches)).backward()
            opt.step()
    elif config == "symbolic":
        run_training(eq, optimizee, 0, problem=problem, device=args.device, splits=())
    elif config.startswith("gradient_K"):
        meta_tune_gradient(eq, optimizee, unroll=int(config.removeprefix("gradient_K")), device=args.device)
    elif config == "optuna":
        meta_tune_optuna(eq, optimizee, n_trials=args.trials, eval_steps=args.steps, device=args.device)
    else:
        raise SystemExit(f"unknown config {config!r}")

    out: dict[str, Any] = {"config": config, "n_params": n_params, "peak_reset": reset}
    if cuda:
        torch.cuda.synchronize()
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["added_mb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak_kb = status_kb("VmHWM")
        out["peak_mb"] = peak_kb / 1024
        out["added_mb"] = max(peak_kb - base_kb, 0) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"])
    ap.add_argument("--hidden", default="512,512", help="MLP hidden widths, comma separated")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--unrolls", default="5,10,20")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--equation", default="eq6", choices=["eq6", "adam"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.hidden = [int(h) for h in str(args.hidden).split(",") if h]

    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    configs = ["adam", "symbolic"] + [f"gradient_K{k}" for k in args.unrolls.split(",") if k] + ["optuna"]
    passthrough = [
        "--dataset",
        args.dataset,
        "--hidden",
        ",".join(map(str, args.hidden)),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--trials",
        str(args.trials),
        "--equation",
        args.equation,
        "--device",
        args.device,
    ]
    results = []
    for c in configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", c, *passthrough],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"worker {c} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    adam = next(r for r in results if r["config"] == "adam")
    print(
        f"MLP {args.hidden} on {args.dataset}: {adam['n_params']} parameters, {args.steps} steps, "
        f"batch {args.batch_size}, equation {args.equation}, device {args.device}"
    )
    print(f"{'config':<14}{'peak MB':>10}{'added MB':>10}{'added/Adam':>12}{'peak/Adam':>11}")
    rows = []
    for r in results:
        added_ratio = r["added_mb"] / max(adam["added_mb"], 1e-9)
        peak_ratio = r["peak_mb"] / adam["peak_mb"]
        print(
            f"{r['config']:<14}{r['peak_mb']:>10.1f}{r['added_mb']:>10.1f}{added_ratio:>12.2f}{peak_ratio:>11.3f}"
        )
        rows.append(
            {
                "config": r["config"],
                "peak_mb": round(r["peak_mb"], 2),
                "added_mb": round(r["added_mb"], 2),
                "added_ratio_vs_adam": round(added_ratio, 3),
                "peak_ratio_vs_adam": round(peak_ratio, 4),
            }
        )
    if not all(r["peak_reset"] for r in results):
        print("note: could not reset the peak-RSS counter; 'added' includes start-up peaks")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
