"""The paper's Table 3 (numerical teachers' eval losses) at CPU scale.

Six teachers, DM, DM+CL+IL, RP, RP+CL+IL, RP(small) and RP(extra), are each meta-trained for
``--budget-s`` seconds on P2 = MLP(50, 20) (batch 128, offline ``digits`` by default), keeping the
weights with the best validation loss (5 validation seeds, horizon ``--horizon``). Each is then
evaluated on 5 UNSEEN seeds of P2 (in distribution) and of P3 = MLP(50, 20, 20, 12) (out of
distribution; never seen in meta-training): the mean final loss over the WHOLE training set at the
horizon, measured exactly as for Adam (best of lr {1e-3, 3e-3, 1e-2} per problem) on the same seeds
(same initial weights and batch order; see ``teacher_vs_adam.py`` for the shared training loop).

The paper's other Table 3 columns (TPF, MC, the distilled equations' losses) come from the collect /
distill stages and are not measured here.

Settings shared by every teacher: episode length = horizon, unroll 20, meta-lr 3e-3, meta-gradient
clipped at norm 1, ``out_scale`` 0.1; ``+CL+IL``: curriculum over episode lengths (50, 100, horizon)
with patience 3 validations (validation always at the horizon) and imitation of Adam(0.01) with
probability 0.3.

Human-readable by default; with ``--json`` the last line is
``{"dataset", "horizon", "budget_s", "seconds", "adam": {...}, "teachers": [...]}`` where ``seconds``
is the script's total wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from teachers.meta_train import optimizee_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import teacher_vs_adam as tva  # noqa: E402 - a sibling script

P2 = (50, 20)
P3 = (50, 20, 20, 12)


def std(xs: Sequence[float]) -> float:
    """Population standard deviation (inf when a value is not finite)."""
    m = tva.mean(xs)
    if not math.isfinite(m):
        return math.inf
    return math.sqrt(sum((x - m) ** 2 for x in xs) / max(len(xs), 1))


def teacher_settings(
    horizon: int, out_scale: float = 0.1, meta_lr: float = 3e-3
) -> dict[str, tva.TeacherSettings]:
    """The six teachers of Table 3 and their meta-training settings."""
    common: dict[str, Any] = {"meta_lr": meta_lr, "episode_length": horizon, "grad_clip": 1.0}
    cl_il: dict[str, Any] = {
        "curriculum": True,
        "cl_lengths": tuple(sorted({min(50, horizon), min(100, horizon), horizon})),
        "imitation": True,
    }
    kw = {"out_scale": out_scale}
    return {
        "DM": tva.TeacherSettings("dm", dict(kw), **common),
        "DM+CL+IL": tva.TeacherSettings("dm", dict(kw), **common, **cl_il),
        "RP": tva.TeacherSettings("rp", dict(kw), **common),
        "RP+CL+IL": tva.TeacherSettings("rp", dict(kw), **common, **cl_il),
        "RP(small)": tva.TeacherSettings("rp_small", dict(kw), **common),
        "RP(extra)": tva.TeacherSettings("rp_extra", dict(kw), **common),
    }


def run(
    dataset: str = "digits",
    horizon: int = 200,
    budget_s: float = 150.0,
    names: Sequence[str] | None = None,
    out_scale: float = 0.1,
    meta_lr: float = 3e-3,
    test_seeds: Sequence[int] = tva.TEST_SEEDS,
    val_seeds: Sequence[int] = tva.VAL_SEEDS,
    adam_lrs: Sequence[float] = tva.ADAM_LRS,
    seed: int = 0,
    log: tva.Log = print,
) -> dict[str, Any]:
    """Meta-train each teacher on P2, evaluate on P2 and P3; returns the JSON summary."""
    t0 = time.monotonic()
    settings = teacher_settings(horizon, out_scale, meta_lr)
    names = list(names or settings)
    okw = {
        name: {"dataset": dataset, "hidden": list(h), "batch_size": 128}
        for name, h in (("P2", P2), ("P3", P3))
    }
    factories = {p: optimizee_factory("mlp", kw) for p, kw in okw.items()}

    adam: dict[str, dict[str, Any]] = {}
    for p, fac in factories.items():
        runs = {lr: tva.per_seed_losses(fac, tva.adam_factory(lr), test_seeds, horizon) for lr in adam_lrs}
        means = {lr: tva.mean(v) for lr, v in runs.items()}
        best = min(adam_lrs, key=lambda lr: means[lr])
        adam[p] = {
            "best_loss": means[best],
            "best_std": std(runs[best]),
            "best_lr": best,
            "means": {str(lr): v for lr, v in means.items()},
        }
        log(f"Adam on {p}: " + ", ".join(f"lr {lr:g}: {v:.3e}" for lr, v in means.items()))

    rows: list[dict[str, Any]] = []
    for name in names:
        s = settings[name]
        res = tva.meta_train_teacher(s, okw["P2"], horizon, budget_s, val_seeds, test_seeds, seed)
        used = {h["optimizee_seed"] for h in res.history}
        assert not used & (set(test_seeds) | set(val_seeds)), "a test/validation seed was used for training"
        teacher = res.teacher().eval()
        per_seed = {
            p: tva.per_seed_losses(fac, tva.teacher_factory(teacher), test_seeds, horizon)
            for p, fac in factories.items()
        }
        row = {
            "teacher": name,
            "in_dist_loss": tva.mean(per_seed["P2"]),
            "in_dist_std": std(per_seed["P2"]),
            "ood_loss": tva.mean(per_seed["P3"]),
            "ood_std": std(per_seed["P3"]),
            "meta_train_s": res.elapsed_s,
            "episodes": res.episodes,
            "meta_iterations": res.meta_iterations,
            "best_val_loss": res.best_val_loss,
            "final_episode_length": res.final_episode_length,
            "imitation_episodes": sum(bool(h.get("imitation")) for h in res.history),
            "stop_reason": res.stop_reason,
        }
        rows.append(row)
        log(
            f"{name}: P2 {row['in_dist_loss']:.3e}, P3 {row['ood_loss']:.3e} "
            f"({res.elapsed_s:.0f} s, {res.episodes} episodes, stop: {res.stop_reason})"
        )

    seconds = time.monotonic() - t0
    log("")
    log(
        f"Table 3 at CPU scale: {dataset}, trained on P2 = MLP{P2}, final full-training-set loss at step "
        f"{horizon}, mean +- std over {len(test_seeds)} unseen seeds"
    )
    header = (
        f"{'teacher':<10} | {'P2 (in-dist)':>21} | {'P3 (OOD)':>21} | {'meta-train s':>12} | "
        f"{'episodes':>8} | {'last ep. len':>12}"
    )
    log(header)
    log("-" * len(header))
    for r in rows:
        log(
            f"{r['teacher']:<10} | {r['in_dist_loss']:9.3e} +- {r['in_dist_std']:8.2e} | "
            f"{r['ood_loss']:9.3e} +- {r['ood_std']:8.2e} | "
            f"{r['meta_train_s']:12.0f} | {r['episodes']:8d} | {r['final_episode_length']:12d}"
        )
    log("-" * len(header))
    log(
        f"{'Adam best':<10} | {adam['P2']['best_loss']:9.3e} +- {adam['P2']['best_std']:8.2e} | "
        f"{adam['P3']['best_loss']:9.3e} +- {adam['P3']['best_std']:8.2e} | "
        f"lr {adam['P2']['best_lr']:g} (P2), {adam['P3']['best_lr']:g} (P3)"
    )
    log(f"total wall time {seconds:.0f} s")
    return {
        "dataset": dataset,
        "horizon": int(horizon),
        "budget_s": float(budget_s),
        "seconds": seconds,
        "adam": adam,
        "teachers": rows,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=150.0, help="meta-training seconds per teacher")
    ap.add_argument("--horizon", type=int, default=200)
    ap.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"])
    ap.add_argument("--teachers", default=None, help="comma-separated subset (default: all six)")
    ap.add_argument("--out-scale", type=float, default=0.1)
    ap.add_argument("--meta-lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see teacher_vs_adam.py)")
    ap.add_argument("--json", action="store_true", help="print the JSON summary as the last line")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.teachers.split(",") if args.teachers else None
    out = run(
        args.dataset,
        args.horizon,
        args.budget_s,
        names,
        out_scale=args.out_scale,
        meta_lr=args.meta_lr,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
