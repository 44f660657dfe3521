"""Memory of LSTM teachers (DM, RP) against Adam as the model grows: state bytes/param and peak RSS.

For MLPs on ``mnist1d`` (or ``digits``) with hidden widths chosen to give about 1e4, 1e5 and 1e6
parameters, each configuration runs in a FRESH subprocess that, after imports, data loading and model
building, resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5; where that is refused it
subtracts the high-water mark reached so far) and then runs one of:

* ``adam``: 20 plain ``torch.optim.Adam`` steps on the model (the functional path, batch 128);
* ``<teacher>-apply``: 20 steps of the teacher as a ``TeacherOptimizer`` (no meta-gradient);
* ``<teacher>-unroll``: one meta-training unroll, i.e. ``MetaTrainer.train_episode`` with episode
  length = unroll = 20: 20 differentiable teacher steps, the meta-loss backward and the meta-step.

Reported per row: optimizer-state bytes per parameter (Adam: ``exp_avg``, ``exp_avg_sq`` and ``step``
from ``optimizer.state``; teachers: feature accumulators + LSTM hidden/cell states), the peak RSS
above the baseline in MB (``VmHWM`` minus the RSS at the reset point), that peak per parameter, and
the ratio to Adam's peak at the same size. A configuration whose extrapolated peak would not fit
in the available memory is skipped (``skipped: reason``) rather than run.

With ``--json`` the last line is a JSON list of the rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import reset_peak, status_kb  # noqa: E402 - a sibling module of the benchmarks

#: (label, hidden widths): 2-hidden-layer MLPs of growing width
SIZES: dict[str, tuple[int, ...]] = {"1e4": (80, 80), "1e5": (290, 290), "1e6": (975, 975)}
MODES: tuple[str, ...] = ("adam", "dm-apply", "dm-unroll", "rp-apply", "rp-unroll")
STEPS = 20
BATCH = 128


# ------------------------------------------------------------------------------------------------
# /proc helpers
# ------------------------------------------------------------------------------------------------
def mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


# ------------------------------------------------------------------------------------------------
# worker (runs in a fresh process)
# ------------------------------------------------------------------------------------------------
def _state_bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _run_once(mode: str, dataset: str, hidden: Sequence[int], steps: int) -> tuple[int, int]:
    """Build the optimizee, run ``mode`` for ``steps`` steps; returns ``(n_params, state bytes)``."""
    from harness.registry import TEACHERS
    from teachers.meta_train import MetaTrainConfig, MetaTrainer, optimizee_factory
    from teachers.optimizer import TeacherOptimizer

    okw = {"dataset": dataset, "hidden": list(hidden), "batch_size": BATCH}
    kind, _, how = mode.partition("-")
    if how == "unroll":
        cfg = MetaTrainConfig(
            teacher=kind,
            optimizee="mlp",
            optimizee_kwargs=okw,
            episode_length=steps,
            unroll=steps,
            episodes=1,
            eval_every=10**9,
        )
        trainer = MetaTrainer(cfg)
        metrics = trainer.train_episode()
        assert metrics["steps"] == steps and math.isfinite(metrics["meta_loss"]), metrics
        n = trainer.factory(0).num_params()
        # the unroll carries the same recurrent state as the applied teacher: count it the same way
        t = trainer.teacher
        state = _state_bytes(list(t.new_feature_state(n).acc.values()))
        return n, state + _state_bytes(list(t.init_state(n).values()))
    opt_ee = optimizee_factory("mlp", okw)(1)
    params = {k: v.requires_grad_(True) for k, v in opt_ee.init_params().items()}
    plist = list(params.values())
    if kind == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(plist, lr=1e-3, foreach=True)
    else:
        opt = TeacherOptimizer(plist, TEACHERS.get(kind)())
    batches = opt_ee.batches("train")
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        opt_ee.loss(params, next(batches)).backward()
        opt.step()
    n = sum(p.numel() for p in plist)
    if isinstance(opt, TeacherOptimizer):
        assert opt._features is not None and opt._tstate is not None
        state = _state_bytes(list(opt._features.acc.values())) + _state_bytes(list(opt._tstate.values()))
    else:
        state = _state_bytes([v for s in opt.state.values() for v in s.values()])
    return n, state


def measure(mode: str, dataset: str, hidden: Sequence[int], steps: int = STEPS) -> dict[str, Any]:
    """Run one configuration in THIS process and measure it (call it in a fresh process).

    A warm-up of the same code path on a tiny MLP (2 steps) runs before the baseline, so lazy imports,
    thread pools and the loaded dataset count as baseline, not as the configuration's memory.
    """
    import optimizees  # noqa: F401 - registers optimizees
    import teachers  # noqa: F401 - registers teachers

    _run_once(mode, dataset, (4,), 2)
    gc.collect()
    hwm_before = status_kb("VmHWM")
    reset = reset_peak()
    base_kb = status_kb("VmRSS")
    t0 = time.perf_counter()
    n_params, state_bytes = _run_once(mode, dataset, hidden, steps)
    seconds = time.perf_counter() - t0
    peak_kb = status_kb("VmHWM") - (base_kb if reset else hwm_before)
    return {
        "mode": mode,
        "dataset": dataset,
        "hidden": list(hidden),
        "n_params": n_params,
        "state_bytes_per_param": state_bytes / n_params,
        "peak_mb": max(peak_kb, 0) / 1024,
        "peak_bytes_per_param": max(peak_kb, 0) * 1024 / n_params,
        "seconds": seconds,
        "peak_reset": reset,
    }


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def run_in_subprocess(mode: str, dataset: str, hidden: Sequence[int], threads: int, timeout_s: float) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        mode,
        "--dataset",
        dataset,
        "--hidden",
        ",".join(str(h) for h in hidden),
        "--threads",
        str(threads),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "hidden": list(hidden), "skipped": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"mode": mode, "hidden": list(hidden), "skipped": f"failed: {tail[0]}"}
    return json.loads(lines[-1])


def run(
    dataset: str = "mnist1d",
    sizes: dict[str, tuple[int, ...]] | None = None,
    modes: Sequence[str] = MODES,
    threads: int = 1,
    timeout_s: float = 300.0,
    mem_fraction: float = 0.6,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Measure every (size, mode) in a fresh subprocess; returns the rows (with ``ratio_vs_adam``)."""
    sizes = sizes or SIZES
    rows: list[dict[str, Any]] = []
    per_param: dict[str, float] = {}  # mode -> largest peak bytes/param seen so far (extrapolation)
    for label, hidden in sizes.items():
        adam_peak = None
        for mode in modes:
            row = _maybe_run(mode, dataset, hidden, threads, timeout_s, per_param, mem_fraction)
            row["size"] = label
            if "peak_mb" in row:
                per_param[mode] = max(per_param.get(mode, 0.0), row["peak_bytes_per_param"])
                if mode == "adam":
                    adam_peak = row["peak_mb"]
                row["ratio_vs_adam"] = row["peak_mb"] / adam_peak if adam_peak else None
            rows.append(row)
            log(_fmt(row))
    return rows


def _n_params(dataset: str, hidden: Sequence[int]) -> int:
    n_in = {"mnist1d": 40, "digits": 64}.get(dataset, 0)
    n, width = 0, n_in
    for h in hidden:
        n += width * h + h
        width = h
    return n + width * 10 + 10


def _maybe_run(
    mode: str,
    dataset: str,
    hidden: Sequence[int],
    threads: int,
    timeout_s: float,
    per_param: dict[str, float],
    mem_fraction: float,
) -> dict[str, Any]:
    n = _n_params(dataset, hidden)
    if mode in per_param:
        est_mb = per_param[mode] * n / 2**20
        avail = mem_available_mb()
        if est_mb > mem_fraction * avail:
            return {
                "mode": mode,
                "hidden": list(hidden),
                "n_params": n,
                "est_peak_mb": est_mb,
                "skipped": f"estimated peak {est_mb:.0f} MB > {mem_fraction:.0%} of {avail:.0f} MB available",
            }
    return run_in_subprocess(mode, dataset, hidden, threads, timeout_s)


def _fmt(row: dict[str, Any]) -> str:
    head = f"{row.get('size', ''):>4} {row.get('n_params', 0):>9} {row['mode']:>10}"
    if "skipped" in row:
        return f"{head}  skipped: {row['skipped']}"
    ratio = row.get("ratio_vs_adam")
    return (
        f"{head} {row['state_bytes_per_param']:10.1f} {row['peak_mb']:10.1f} "
        f"{row['peak_bytes_per_param']:10.1f} {f'{ratio:.1f}x' if ratio else '-':>9} {row['seconds']:7.2f}"
    )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]] | dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "digits"])
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"subset of {','.join(SIZES)}")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per configuration")
    ap.add_argument("--json", action="store_true", help="print the rows as a JSON list (last line)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--hidden", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        row = measure(args.worker, args.dataset, hidden)
        print(json.dumps(row))
        return row
    sizes = {k: SIZES[k] for k in args.sizes.split(",")}
    modes = tuple(args.modes.split(","))
    print(
        f"{'size':>4} {'params':>9} {'mode':>10} {'state B/p':>10} {'peak MB':>10} "
        f"{'peak B/p':>10} {'vs Adam':>9} {'secs':>7}"
    )
    rows = run(args.dataset, sizes, modes, args.threads, args.timeout_s)
    print(
        "state B/p: optimizer state bytes per parameter; peak MB: peak RSS above the baseline taken "
        f"after imports, data loading and model building ({STEPS} steps, batch {BATCH}); vs Adam: peak "
        "ratio at the same size"
    )
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
