"""Does a meta-trained RP-family teacher beat tuned Adam on an offline MLP task? (2 CPU cores, < 10 min)

The teacher (default ``rp``) is meta-trained on MLP(50, 20) / batch 128 (default dataset ``digits``)
by truncated BPTT (episodes of ``--horizon`` steps, unroll 20) for ``--budget-s`` seconds, keeping the
weights with the best validation loss on 5 held-out validation seeds. Then teacher and Adam (lr in
{1e-3, 3e-3, 1e-2}, the best lr by mean) train the same 5 UNSEEN seeds (never a training episode nor a
validation seed): same initial weights, same minibatch order, the same functional training loop
(``optimizee.loss(params, batch)`` + ``.backward()`` + ``optimizer.step()``; the teacher runs as a
:class:`~teachers.optimizer.TeacherOptimizer`, Adam is ``torch.optim.Adam``). The number compared is
the loss over the WHOLE training set at the horizon (not a minibatch loss), averaged over the 5 seeds;
validation during meta-training uses the same measure.

Default settings (chosen by trial, see the numbers below): ``rp`` with ``out_scale`` 0.1 (the default
0.01 bounds every step to Adam(0.01)'s size), meta-lr 3e-3 with the meta-gradient clipped at norm 1,
episodes of 200 steps (= the horizon) cut into unrolls of 20, no random scaling, no CL/IL, validation
every 10 episodes on 5 validation seeds at the horizon, 420 s of meta-training (135-160 episodes).
Measured on the shared 2-core machine, teacher vs Adam(0.01), the best lr: digits 1.6e-5 (seed 0, twice),
2.6e-5 (seed 1), 2.6e-5 (seed 2) vs 1.48e-3; digits with 2 threads under contention (10 episodes)
8.5e-4 vs 1.48e-3; mnist1d 1.146 vs 1.154 (a narrow win; best validation at episode 50).

Threads: ``--threads 1`` by default. These problems have a few thousand coordinates, and on the
shared 2-core machine 2 intra-op threads made every step 4-14x slower than 1 (OpenMP workers
spinning against other processes), i.e. far fewer meta-training episodes in the same budget.

A hard wall-clock deadline (``--deadline-s``, default 570 s for the whole script) caps meta-training:
Adam is evaluated first, its cost sets aside the time the final evaluation needs.

Human-readable by default; with ``--json`` the last line is
``{"teacher_loss", "adam_best_loss", "horizon", "seconds"}`` where ``seconds`` is the TOTAL wall time
of the script (data loading, Adam baselines, meta-training, validation and evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import optimizees  # noqa: F401 - registers the built-in optimizees
import teachers  # noqa: F401 - registers the built-in teachers
from optimizees.base import Batch, Optimizee
from teachers.base import Teacher
from teachers.meta_train import MetaTrainConfig, MetaTrainer, MetaTrainResult, optimizee_factory
from teachers.optimizer import TeacherOptimizer

#: seeds of the final comparison: never a meta-training episode, never a validation seed
TEST_SEEDS: tuple[int, ...] = (2_000_000, 2_000_001, 2_000_002, 2_000_003, 2_000_004)
VAL_SEEDS: tuple[int, ...] = (1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004)
ADAM_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
P2_HIDDEN: tuple[int, ...] = (50, 20)

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------
def full_train_loss(optimizee: Optimizee, params: dict[str, torch.Tensor]) -> float:
    """Loss of ``params`` over the whole training set of a classification optimizee (one batch)."""
    data = optimizee.data  # type: ignore[attr-defined]
    idx = getattr(optimizee, "_train_idx", None)
    x, y = (data.x_train, data.y_train) if idx is None else (data.x_train[idx], data.y_train[idx])
    with torch.no_grad():
        return float(optimizee.loss(params, Batch(data.prepare(x), y)))


def train_final_loss(
    optimizee: Optimizee, make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer], steps: int
) -> float:
    """Train ``optimizee`` from its seeded init for ``steps`` steps on its seeded batch stream with the
    optimizer ``make_opt(params)``; return the full-training-set loss at the horizon (inf if diverged)."""
    params = {k: v.requires_grad_(True) for k, v in optimizee.init_params().items()}
    opt = make_opt(list(params.values()))
    batches = optimizee.batches("train")
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = optimizee.loss(params, next(batches))
        if not math.isfinite(float(loss.detach())):
            return math.inf
        loss.backward()
        opt.step()
    final = full_train_loss(optimizee, {k: v.detach() for k, v in params.items()})
    return final if math.isfinite(final) else math.inf


def adam_factory(lr: float) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    return lambda params: torch.optim.Adam(params, lr=lr)


def teacher_factory(teacher: Teacher) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    return lambda params: TeacherOptimizer(params, teacher)


def per_seed_losses(
    factory: Callable[[int], Optimizee],
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    seeds: Sequence[int],
    steps: int,
) -> list[float]:
    return [train_final_loss(factory(int(s)), make_opt, steps) for s in seeds]


def mean(xs: Sequence[float]) -> float:
    m = sum(xs) / max(len(xs), 1)
    return m if math.isfinite(m) else math.inf


# ------------------------------------------------------------------------------------------------
# meta-training with an honest validation measure
# ------------------------------------------------------------------------------------------------
class FullLossMetaTrainer(MetaTrainer):
    """A :class:`MetaTrainer` that validates by the full-training-set loss at ``eval_steps`` (instead of
    the last minibatch loss) and never draws a training seed from ``reserved`` (the test seeds)."""

    def __init__(self, cfg: MetaTrainConfig, reserved: Sequence[int] = ()) -> None:
        super().__init__(cfg)
        self.reserved = set(int(s) for s in reserved)

    def _next_train_seed(self) -> int:
        while True:
            s = super()._next_train_seed()
            if s not in self.reserved:
                return s

    def validate(self) -> float:
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            losses = per_seed_losses(
                self.factory, teacher_factory(self.teacher), self.cfg.val_seeds, self.eval_steps
            )
        finally:
            self.teacher.train(was_training)
        return mean(losses)


@dataclass
class TeacherSettings:
    """Meta-training settings of one teacher (see :class:`~teachers.meta_train.MetaTrainConfig`)."""

    teacher: str = "rp"
    teacher_kwargs: dict[str, Any] = field(default_factory=lambda: {"out_scale": 0.1})
    meta_lr: float = 3e-3
    episode_length: int | None = None  # None = the evaluation horizon
    unroll: int = 20
    random_scaling: bool = False
    random_scale: float = 1.0
    curriculum: bool = False
    cl_lengths: tuple[int, ...] = ()
    imitation: bool = False
    grad_clip: float | None = 1.0
    eval_every: int = 10


def meta_train_teacher(
    settings: TeacherSettings,
    optimizee_kwargs: dict[str, Any],
    horizon: int,
    budget_s: float,
    val_seeds: Sequence[int] = VAL_SEEDS,
    reserved: Sequence[int] = TEST_SEEDS,
    seed: int = 0,
) -> MetaTrainResult:
    """Meta-train ``settings.teacher`` for ``budget_s`` seconds (validation included)."""
    length = settings.episode_length or horizon
    cfg = MetaTrainConfig(
        teacher=settings.teacher,
        teacher_kwargs=dict(settings.teacher_kwargs),
        optimizee="mlp",
        optimizee_kwargs=dict(optimizee_kwargs),
        episode_length=length,
        unroll=settings.unroll,
        meta_lr=settings.meta_lr,
        grad_clip=settings.grad_clip,
        episodes=None,
        time_budget_s=max(budget_s, 0.0),
        random_scaling=settings.random_scaling,
        random_scale=settings.random_scale,
        curriculum=settings.curriculum,
        cl_lengths=settings.cl_lengths or (length,),
        imitation=settings.imitation,
        eval_every=settings.eval_every,
        val_seeds=tuple(val_seeds),
        eval_steps=horizon,
        seed=seed,
    )
    return FullLossMetaTrainer(cfg, reserved=reserved).run()


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------
def run(
    settings: TeacherSettings | None = None,
    dataset: str = "digits",
    horizon: int = 200,
    budget_s: float = 480.0,
    deadline_s: float = 570.0,
    hidden: Sequence[int] = P2_HIDDEN,
    batch_size: int = 128,
    test_seeds: Sequence[int] = TEST_SEEDS,
    val_seeds: Sequence[int] = VAL_SEEDS,
    adam_lrs: Sequence[float] = ADAM_LRS,
    seed: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """Meta-train, then compare with Adam on ``test_seeds``; returns the JSON summary plus details.

    ``budget_s`` is the meta-training budget; it is cut so that the whole call ends before
    ``deadline_s`` (measured from the call's start).
    """
    t0 = time.monotonic()
    settings = settings or TeacherSettings()
    assert not set(test_seeds) & set(val_seeds), "test seeds must differ from validation seeds"
    okw = {"dataset": dataset, "hidden": list(hidden), "batch_size": batch_size}
    factory = optimizee_factory("mlp", okw)
    n_params = factory(int(test_seeds[0])).num_params()

    t_adam = time.monotonic()
    adam = {lr: per_seed_losses(factory, adam_factory(lr), test_seeds, horizon) for lr in adam_lrs}
    t_adam = time.monotonic() - t_adam
    best_lr = min(adam_lrs, key=lambda lr: mean(adam[lr]))
    # the final eval runs the teacher over the test seeds after one last validation; a teacher step
    # costs 1-4x an Adam step (more under CPU contention)
    per_run = t_adam / max(len(adam_lrs), 1)
    reserve = 4.0 * per_run * (1 + len(val_seeds) / max(len(test_seeds), 1)) + 10.0
    budget = min(budget_s, deadline_s - (time.monotonic() - t0) - reserve)
    log(
        f"{dataset} MLP{tuple(hidden)} ({n_params} params), batch {batch_size}, horizon {horizon}; "
        f"Adam baselines took {t_adam:.1f} s; meta-training budget {budget:.0f} s"
    )
    result = meta_train_teacher(settings, okw, horizon, budget, val_seeds, test_seeds, seed)
    used = {h["optimizee_seed"] for h in result.history}
    assert not used & (set(test_seeds) | set(val_seeds)), "a test/validation seed was used for training"
    teacher = result.teacher().eval()
    t_eval = time.monotonic()
    ours = per_seed_losses(factory, teacher_factory(teacher), test_seeds, horizon)
    t_eval = time.monotonic() - t_eval
    seconds = time.monotonic() - t0

    teacher_loss, adam_best = mean(ours), mean(adam[best_lr])
    log(
        f"meta-training: {result.elapsed_s:.1f} s, {result.episodes} episodes, "
        f"{result.meta_iterations} meta-iterations, stop: {result.stop_reason}; best validation "
        f"loss {result.best_val_loss:.4g} at episode {result.best_episode}"
    )
    log(f"settings: {settings}")
    header = f"{'seed':>9} | {'teacher':>9} | " + " | ".join(f"Adam {lr:g}".rjust(11) for lr in adam_lrs)
    log(f"final full-training-set loss at step {horizon} (unseen seeds):")
    log(header)
    log("-" * len(header))
    for i, s in enumerate(test_seeds):
        row = f"{s:>9} | {ours[i]:9.3e} | " + " | ".join(f"{adam[lr][i]:11.3e}" for lr in adam_lrs)
        log(row)
    log("-" * len(header))
    means = " | ".join(f"{mean(adam[lr]):11.3e}" for lr in adam_lrs)
    log(f"{'mean':>9} | {teacher_loss:9.3e} | {means}")
    verdict = "teacher <= Adam best" if teacher_loss <= adam_best else "teacher LOSES to Adam best"
    log(f"teacher {teacher_loss:.4g} vs Adam best (lr {best_lr:g}) {adam_best:.4g}: {verdict}")
    log(f"teacher evaluation {t_eval:.1f} s; total wall time {seconds:.1f} s")
    return {
        "teacher_loss": teacher_loss,
        "adam_best_loss": adam_best,
        "horizon": int(horizon),
        "seconds": seconds,
        "details": {
            "adam_best_lr": best_lr,
            "adam_means": {str(lr): mean(adam[lr]) for lr in adam_lrs},
            "teacher_per_seed": ours,
            "adam_per_seed": {str(lr): adam[lr] for lr in adam_lrs},
            "meta_train_s": result.elapsed_s,
            "episodes": result.episodes,
            "meta_iterations": result.meta_iterations,
            "best_val_loss": result.best_val_loss,
            "n_params": n_params,
        },
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--budget-s", type=float, default=420.0, help="meta-training seconds (validation included)"
    )
    ap.add_argument(
        "--deadline-s", type=float, default=570.0, help="hard cap on the whole script's wall time"
    )
    ap.add_argument("--horizon", type=int, default=200, help="evaluation (and validation) horizon in steps")
    ap.add_argument("--dataset", default="digits", choices=["digits", "mnist1d"])
    ap.add_argument("--teacher", default="rp", choices=["rp", "rp_small", "rp_extra"])
    ap.add_argument("--out-scale", type=float, default=0.1)
    ap.add_argument("--meta-lr", type=float, default=3e-3)
    ap.add_argument("--episode-length", type=int, default=None, help="default: the horizon")
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--random-scaling", action="store_true")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see the module docstring)")
    ap.add_argument("--json", action="store_true", help="print the JSON summary as the last line")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TeacherSettings(
        teacher=args.teacher,
        teacher_kwargs={"out_scale": args.out_scale},
        meta_lr=args.meta_lr,
        episode_length=args.episode_length,
        unroll=args.unroll,
        random_scaling=args.random_scaling,
        eval_every=args.eval_every,
    )
    out = run(
        settings,
        dataset=args.dataset,
        horizon=args.horizon,
        budget_s=args.budget_s,
        deadline_s=args.deadline_s,
        seed=args.seed,
    )
    if args.json:
        keys = ("teacher_loss", "adam_best_loss", "horizon", "seconds")
        print(json.dumps({k: out[k] for k in keys}))
    return out


if __name__ == "__main__":
    main()
