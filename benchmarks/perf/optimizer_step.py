"""Step time and state memory of SymbolicOptimizer against ``torch.optim.Adam(foreach=True)`` on CPU.

The parameter set is ResNet-18's (``torchvision.models.resnet18(weights=None, num_classes=10)``, 11.2M
parameters in 62 tensors) with fixed random gradients. Every optimizer steps the same parameters; repetitions
are interleaved (Adam, rule 1, rule 2, ... per round) and medians taken, all in one process with
``torch.set_num_threads(2)``, so machine noise hits every rule alike. State bytes per parameter is the sum of
the state tensors' ``nbytes`` over the number of parameters (Adam: ``exp_avg`` + ``exp_avg_sq`` = 8 B plus its
0-dim ``step`` tensors).

Rules: ``adam_equation`` (Adam as ``-0.001*m_hat_0``), ``eq6_L2`` and ``eq6_L20`` (the paper's eq. 6 over
``m_hat, g_hat`` with 2 / 20 lags). With ``--json`` the last stdout line is a JSON list of
``{"rule", "step_ms", "step_ratio_vs_adam", "state_bytes_per_param"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.optimizer import SymbolicOptimizer


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Sum of ``nbytes`` of every tensor in the optimizer's per-parameter state."""
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=9, help="timed rounds (each round steps every rule once)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default="adam_equation,eq6_L2,eq6_L20")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    n_params = sum(p.numel() for p in params)

    builders: dict[str, Callable[[], SymbolicOptimizer]] = {
        "adam_equation": lambda: SymbolicOptimizer(params, adam_equation(lr=1e-3)),
        "eq6_L2": lambda: SymbolicOptimizer(params, eq6(("m_hat", "g_hat"), L=2)),
        "eq6_L20": lambda: SymbolicOptimizer(params, eq6(("m_hat", "g_hat"), L=20)),
    }
    rules = [r for r in args.rules.split(",") if r]
    unknown = set(rules) - set(builders)
    if unknown:
        raise SystemExit(f"unknown rules {sorted(unknown)}; known: {', '.join(builders)}")
    opts: dict[str, torch.optim.Optimizer] = {"adam": torch.optim.Adam(params, lr=1e-3, foreach=True)}
    opts.update({r: builders[r]() for r in rules})

    times: dict[str, list[float]] = {k: [] for k in opts}
    with torch.no_grad():
        for rnd in range(args.warmup + args.reps):
            for name, opt in opts.items():
                t0 = time.perf_counter()
                opt.step()
                dt = time.perf_counter() - t0
                if rnd >= args.warmup:
                    times[name].append(dt)

    med = {k: statistics.median(v) for k, v in times.items()}
    adam_bytes = state_bytes(opts["adam"]) / n_params
    print(
        f"ResNet-18 parameters: {n_params} in {len(params)} tensors; threads={args.threads}; "
        f"{args.reps} interleaved rounds, medians"
    )
    print(f"{'rule':<16}{'step ms':>10}{'ratio vs Adam':>15}{'state B/param':>15}")
    print(f"{'torch Adam':<16}{med['adam'] * 1e3:>10.1f}{1.0:>15.2f}{adam_bytes:>15.3f}")
    rows = []
    for r in rules:
        ratio = med[r] / med["adam"]
        sb = state_bytes(opts[r]) / n_params
        print(f"{r:<16}{med[r] * 1e3:>10.1f}{ratio:>15.2f}{sb:>15.3f}")
        rows.append(
            {
                "rule": r,
                "step_ms": round(med[r] * 1e3, 2),
                "step_ratio_vs_adam": round(ratio, 3),
                "state_bytes_per_param": round(sb, 3),
            }
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
