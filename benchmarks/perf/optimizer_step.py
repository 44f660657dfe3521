"""Step time, state memory and training wall time of SymbolicOptimizer against ``torch.optim.Adam(foreach=True)``
on CPU, on a model of many small tensors and on a big one.

Models:

* ``mlp_p3``: the paper's P3, ``OPTIMIZEES.get("mlp")(seed=0, dataset="mnist1d", hidden=[50, 20, 20, 12])``
  (3,872 parameters in 10 tensors; per-tensor overhead is what costs here);
* ``resnet18``: ResNet-18 for 32x32 inputs as the ``cnn`` optimizee builds it (``optimizees.cnn.build_cnn``,
  11.2M parameters in 62 tensors; arithmetic per coordinate is what costs here).

Step time: every optimizer steps the same parameters with fixed random gradients; repetitions are interleaved
(Adam, rule 1, rule 2, ... per round) and medians taken, all in one process with ``torch.set_num_threads``,
so machine noise hits every rule alike. State bytes per parameter is the sum of the state tensors' ``nbytes``
over the number of parameters (Adam: ``exp_avg`` + ``exp_avg_sq`` = 8 B plus its 0-dim ``step`` tensors).

The allocator is held warm (glibc ``mallopt``: no ``mmap`` for blocks under 32 MiB, no trimming of the heap;
``--glibc-malloc-defaults`` keeps glibc's own settings). ``Adam(foreach=True)`` allocates its temporaries
(``sqrt(v)``: 45 MB on ResNet-18) every step; with glibc's defaults whether they come back as fresh pages
(page faults and zeroing: ResNet-18's Adam step measured anywhere from 14 to 63 ms) or from the heap (10 ms)
depends on what else the process allocated before, i.e. on which rules ran beside it. Held warm, Adam is
timed at its best and the same in every run, as under jemalloc / tcmalloc.

Training wall time: a real training run through ``harness.stages.evaluate.train`` (the optimizee's module,
batches and loss; no test evaluation), timed from the call to the last step's log, against Adam's run, the
runs interleaved over ``--train-rounds`` rounds and medians taken. ``mlp_p3`` trains ``--mlp-train-steps``
(1,000) steps on MNIST-1D. ``resnet18`` trains only ``--resnet-train-steps`` (default 10) steps on batches of
``--resnet-batch`` (default 8) CIFAR-10 images (random CIFAR-shaped images when CIFAR-10 is not on disk:
forward and backward cost the same), because 1,000 steps of ResNet-18 take far too long on two cores; the
output says which.

Rules: ``adam_equation`` (Adam as ``-0.001*m_hat_0``), ``eq6_L2`` and ``eq6_L20`` (the paper's eq. 6 over
``m_hat, g_hat`` with 2 / 20 lags). ``--batch-numel 0`` steps every tensor on its own (the per-tensor path, as
before small tensors were batched).

Each rule runs as ``SymbolicOptimizer``'s default (eager) step and, on models with a tensor above
``--batch-numel`` (where ``compile=True`` changes anything), also with ``compile=True`` (one
``torch.compile``-d kernel per big tensor; ``--no-compile`` skips these rows). A compiled row's step time is
measured after the compiling first step; the compilation is reported apart, never folded in or left out
silently: ``compile_s`` is the step-timing optimizer's compile time (its first step), ``train_compile_s`` the
median compile time inside one training run (each run builds a new optimizer; inductor's on-disk cache makes
later ones cheaper), and ``train_wall_ratio`` is the training wall time LESS that run's compile time, over
Adam's (``train_wall_ratio_with_compile`` keeps it in).

Compiled training step (``--compiled-step-models``, default ``mlp_p3``; ``--no-compiled-step`` skips it): one
``torch.compile``-d function (inductor) runs forward, backward, ``opt.step()`` and ``zero_grad`` on a fixed batch,
for ``torch.optim.Adam(lr=1e-3)`` and for each rule's ``SymbolicOptimizer`` (its default step, traced whole by
dynamo). Dynamo's frame count (``torch._dynamo.testing.CompileCounterWithBackend``) after the first step is
``compiles`` (the backward is a graph break, for Adam too, so a step is more than one frame), and the frames
compiled during the next ``--compiled-steps`` (50) steps are ``recompiles``. Then the step is timed (interleaved
rounds, medians) and its ratio to compiled Adam's step is printed beside the rule's eager optimizer-step ratio.

With ``--json`` the last stdout line is a JSON list of ``{"rule", "model", "compile", "step_ratio_vs_adam",
"state_bytes_per_param", "train_wall_ratio"}`` (compiled rows add ``compile_s``, ``train_compile_s`` and
``train_wall_ratio_with_compile``), then the compiled-training-step rows ``{"rule", "model",
"compiled_training_step": true, "compiles", "recompiles", "steps", "step_ms",
"step_ratio_vs_compiled_adam", "eager_step_ratio_vs_adam"}`` (Adam's own row has rule ``adam``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.stages.cost import state_bytes_per_param
from harness.stages.evaluate import train
from harness.symbolic.families import adam_equation, eq6
from harness.symbolic.optim.batched import DEFAULT_BATCH_NUMEL
from harness.symbolic.optim.optimizer import SymbolicOptimizer
from optimizees.base import Batch

MODELS = ("mlp_p3", "resnet18")
RULES = ("adam_equation", "eq6_L2", "eq6_L20")
COMPILED = "+compile"  # suffix of a rule name: the same rule with SymbolicOptimizer(compile=True)


def hold_malloc_warm() -> bool:
    """glibc only: serve blocks under 32 MiB (glibc's largest mmap threshold) from the heap and never trim it,
    so freed memory is reused without page faults. False where it could not be set (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        mmap_ok = libc.mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(32 << 20))
        trim_ok = libc.mallopt(ctypes.c_int(m_trim_threshold), ctypes.c_int(2**31 - 1))
        return bool(mmap_ok) and bool(trim_ok)
    except (OSError, AttributeError):
        return False


def rule_builder(rule: str, batch_numel: int) -> Callable[[Any], torch.optim.Optimizer]:
    """``params -> optimizer`` for a rule name (``adam`` is ``torch.optim.Adam(lr=1e-3, foreach=True)``; a name
    ending in ``+compile`` is that rule with ``compile=True``)."""
    if rule == "adam":
        return lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True)
    compiled = rule.endswith(COMPILED)
    rule = rule.removesuffix(COMPILED)
    equations = {
        "adam_equation": lambda: adam_equation(lr=1e-3),
        "eq6_L2": lambda: eq6(("m_hat", "g_hat"), L=2),
        "eq6_L20": lambda: eq6(("m_hat", "g_hat"), L=20),
    }
    if rule not in equations:
        raise SystemExit(f"unknown rule {rule!r}; known: {', '.join(equations)}")
    make_eq = equations[rule]
    return lambda params: SymbolicOptimizer(params, make_eq(), batch_numel=batch_numel, compile=compiled)


class SyntheticCifarResNet:
    """The ``cnn`` optimizee's ResNet-18 on random CIFAR-shaped batches (when CIFAR-10 is not on disk): what
    :func:`~harness.stages.evaluate.train` reads of a problem, with the same module and loss."""

    is_classification = True

    def __init__(self, batch_size: int, seed: int = 0) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = 10_000

    def module(self) -> nn.Module:
        from optimizees.cnn import build_cnn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_cnn("resnet18", 10)

    def batches(self, split: str = "train") -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            x = torch.randn(self.batch_size, 3, 32, 32, generator=g)
            yield Batch(x, torch.randint(0, 10, (self.batch_size,), generator=g))

    def module_loss(self, module: nn.Module, batch: Batch) -> torch.Tensor:
        assert batch.inputs is not None and batch.targets is not None
        return F.cross_entropy(module(batch.inputs), batch.targets)


def build_problem(model: str, resnet_batch: int) -> tuple[Any, str]:
    """The optimizee for ``model`` and a line saying what it is."""
    from harness.registry import OPTIMIZEES

    if model == "mlp_p3":
        prob = OPTIMIZEES.get("mlp")(seed=0, dataset="mnist1d", hidden=[50, 20, 20, 12])
        return prob, "MLP(50,20,20,12) on MNIST-1D, batch 128"
    try:
        prob = OPTIMIZEES.get("cnn")(seed=0, arch="resnet18", dataset="cifar10", batch_size=resnet_batch)
        return prob, f"ResNet-18 on CIFAR-10, batch {resnet_batch}"
    except (ValueError, OSError, RuntimeError):
        prob = SyntheticCifarResNet(resnet_batch)
        return prob, f"ResNet-18 on random CIFAR-shaped images (CIFAR-10 not on disk), batch {resnet_batch}"


def step_times(params: list[torch.Tensor], rules: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Median step seconds and state bytes per parameter of Adam and every rule on ``params``."""
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p)
    opts = {r: rule_builder(r, args.batch_numel)(params) for r in ["adam", *rules]}
    times: dict[str, list[float]] = {k: [] for k in opts}
    inner = args.inner if sum(p.numel() for p in params) < 1_000_000 else 1
    with torch.no_grad():
        names = list(opts)
        for rnd in range(args.warmup + args.reps):
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:  # rotated: no favoured slot
                opt = opts[name]
                t0 = time.perf_counter()
                for _ in range(inner):
                    opt.step()
                dt = (time.perf_counter() - t0) / inner
                if rnd >= args.warmup:
                    times[name].append(dt)
    return {
        "step_s": {k: statistics.median(v) for k, v in times.items()},
        # the leaderboard's cost column (its own state_bytes() where an optimizer has one: step counts left out)
        "bytes": {k: state_bytes_per_param(o, params) for k, o in opts.items()},
        "compile_s": {k: float(getattr(o, "compile_seconds", 0.0)) for k, o in opts.items()},
    }


def train_times(
    problem: Any, rules: list[str], steps: int, rounds: int, batch_numel: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds of a ``steps``-step training run per optimizer (runs interleaved per round), less the
    run's compile seconds, and the median compile seconds per run."""
    names = ["adam", *rules]
    times: dict[str, list[float]] = {r: [] for r in names}
    compiles: dict[str, list[float]] = {r: [] for r in names}
    for rnd in range(rounds + 1):  # round 0: a short untimed warm-up run of each
        n = min(steps, 20) if rnd == 0 else steps
        for rule in names[rnd % len(names) :] + names[: rnd % len(names)]:  # rotated: no favoured slot
            make = rule_builder(rule, batch_numel)
            done: list[float] = []
            made: list[torch.optim.Optimizer] = []

            def on_log(step: int, _loss: float, _mean: float, done: list[float] = done, n: int = n) -> None:
                if step == n:
                    done.append(time.perf_counter())

            t0 = time.perf_counter()
            res = train(
                problem,
                lambda ps, make=make, made=made: (made.append(make(ps)) or made[-1], None),
                n,
                log_every=n,
                on_log=on_log,
                evaluate_test=False,
            )
            if res.status != "ok" or not done:
                raise SystemExit(f"{rule}: training run ended {res.status} at step {res.steps}")
            if rnd > 0:
                compile_s = float(getattr(made[0], "compile_seconds", 0.0))
                times[rule].append(done[0] - t0 - compile_s)
                compiles[rule].append(compile_s)
    return (
        {k: statistics.median(v) for k, v in times.items()},
        {k: statistics.median(v) for k, v in compiles.items()},
    )


def compiled_step_rows(
    problem: Any, model: str, rules: list[str], args: argparse.Namespace, eager: dict[str, float]
) -> list[dict[str, Any]]:
    """The compiled-training-step rows of ``model`` (see the module docstring)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    batch = next(iter(problem.batches()))
    steps: dict[str, Callable[[], torch.Tensor]] = {}
    counts: dict[str, tuple[int, int]] = {}
    for rule in ["adam", *rules]:
        torch._dynamo.reset()
        torch.manual_seed(0)
        module = problem.module()
        params = list(module.parameters())
        opt = (
            torch.optim.Adam(params, lr=1e-3)
            if rule == "adam"
            else rule_builder(rule, args.batch_numel)(params)
        )
        counter = CompileCounterWithBackend(args.compiled_step_backend)

        @torch.compile(backend=counter)
        def train_step(
            module: nn.Module = module, opt: torch.optim.Optimizer = opt, batch: Batch = batch
        ) -> torch.Tensor:
            loss = problem.module_loss(module, batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss.detach()

        train_step()
        first = counter.frame_count
        for _ in range(args.compiled_steps - 1):
            train_step()
        counts[rule] = (first, counter.frame_count - first)
        steps[rule] = train_step
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for rnd in range(args.warmup + args.reps):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            fn = steps[name]
            t0 = time.perf_counter()
            for _ in range(args.inner):
                fn()
            if rnd >= args.warmup:
                times[name].append((time.perf_counter() - t0) / args.inner)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\n{model}: compiled training step (forward, backward, opt.step(), zero_grad; "
        f"{args.compiled_step_backend}), "
        f"{args.compiled_steps} steps, then {args.reps} interleaved rounds of {args.inner}, medians"
    )
    print(
        f"{'rule':<24}{'compiles':>10}{'recompiles':>12}{'step ms':>10}{'vs compiled Adam':>18}{'eager ratio':>13}"
    )
    rows = []
    for r in names:
        ratio = med[r] / med["adam"]
        eager_ratio = eager.get(r)
        print(
            f"{'torch Adam' if r == 'adam' else r:<24}{counts[r][0]:>10}{counts[r][1]:>12}{med[r] * 1e3:>10.3f}"
            f"{ratio:>18.2f}{'' if eager_ratio is None else f'{eager_ratio:.2f}':>13}"
        )
        rows.append(
            {
                "rule": r,
                "model": model,
                "compiled_training_step": True,
                "compiles": counts[r][0],
                "recompiles": counts[r][1],
                "steps": args.compiled_steps,
                "step_ms": round(med[r] * 1e3, 4),
                "step_ratio_vs_compiled_adam": round(ratio, 3),
                "eager_step_ratio_vs_adam": None if eager_ratio is None else round(eager_ratio, 3),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=9, help="timed rounds (each round steps every rule)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--inner", type=int, default=20, help="steps per timing on models under 1M parameters")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch-numel", type=int, default=DEFAULT_BATCH_NUMEL, help="0: the per-tensor path")
    ap.add_argument("--train-rounds", type=int, default=3)
    ap.add_argument("--mlp-train-steps", type=int, default=1000)
    ap.add_argument("--resnet-train-steps", type=int, default=10)
    ap.add_argument("--resnet-batch", type=int, default=8)
    ap.add_argument("--no-train", action="store_true", help="skip the training runs (train_wall_ratio null)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=True rows")
    ap.add_argument(
        "--glibc-malloc-defaults",
        action="store_true",
        help="keep glibc's malloc settings (Adam's step time then depends on the process's allocation history)",
    )
    ap.add_argument("--no-compiled-step", action="store_true", help="skip the compiled training step rows")
    ap.add_argument("--compiled-step-models", default="mlp_p3", help="models for the compiled training step")
    ap.add_argument("--compiled-steps", type=int, default=50, help="compiled steps counted for recompiles")
    ap.add_argument(
        "--compiled-step-backend",
        default="inductor",
        help="torch.compile backend of the compiled training step (aot_eager: no code generation, for a smoke run)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    warm = False if args.glibc_malloc_defaults else hold_malloc_warm()
    print(f"allocator: {'held warm (mallopt)' if warm else 'glibc defaults'}")
    rules = [r for r in args.rules.split(",") if r]
    for r in rules:
        rule_builder(r, args.batch_numel)  # unknown names fail before any timing
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")

    rows = []
    for model in models:
        problem, what = build_problem(model, args.resnet_batch)
        params = list(problem.module().parameters())
        n_params = sum(p.numel() for p in params)
        compiles = not args.no_compile and any(p.numel() > args.batch_numel for p in params)
        variants = rules + ([r + COMPILED for r in rules] if compiles else [])
        st = step_times(params, variants, args)
        del params
        steps = args.mlp_train_steps if model == "mlp_p3" else args.resnet_train_steps
        tr, tr_compile = (
            (None, None)
            if args.no_train
            else train_times(problem, variants, steps, args.train_rounds, args.batch_numel)
        )
        print(
            f"\n{model}: {n_params} parameters; threads={args.threads}; batch_numel={args.batch_numel}; step: "
            f"{args.reps} interleaved rounds, medians"
            + (
                ""
                if tr is None
                else f"; training: {what}, {steps} steps, {args.train_rounds} rounds, medians, "
                "compile time taken out (train compile s)"
            )
        )
        med, adam_train = st["step_s"], (tr or {}).get("adam")
        print(
            f"{'rule':<24}{'step ms':>10}{'step ratio':>12}{'state B/param':>15}{'compile s':>11}"
            f"{'train s':>10}{'train ratio':>13}{'train compile s':>17}"
        )
        for r in ["adam", *variants]:
            ratio = med[r] / med["adam"]
            tw = None if tr is None or adam_train is None else tr[r] / adam_train
            compiled = r.endswith(COMPILED)
            train_s = "" if tr is None else f"{tr[r]:.2f}"
            train_r = "" if tw is None else f"{tw:.2f}"
            comp_s = f"{st['compile_s'][r]:.2f}" if compiled else ""
            tr_comp = "" if tr_compile is None or not compiled else f"{tr_compile[r]:.2f}"
            label = "torch Adam" if r == "adam" else r
            print(
                f"{label:<24}{med[r] * 1e3:>10.3f}{ratio:>12.2f}{st['bytes'][r]:>15.3f}{comp_s:>11}"
                f"{train_s:>10}{train_r:>13}{tr_comp:>17}"
            )
            if r != "adam":
                row: dict[str, Any] = {
                    "rule": r.removesuffix(COMPILED),
                    "model": model,
                    "compile": compiled,
                    "step_ratio_vs_adam": round(ratio, 3),
                    "state_bytes_per_param": round(st["bytes"][r], 3),
                    "train_wall_ratio": None if tw is None else round(tw, 3),
                }
                if compiled:
                    row["compile_s"] = round(st["compile_s"][r], 3)
                    row["train_compile_s"] = None if tr_compile is None else round(tr_compile[r], 3)
                    row["train_wall_ratio_with_compile"] = (
                        None
                        if tr is None or tr_compile is None or adam_train is None
                        else round((tr[r] + tr_compile[r]) / adam_train, 3)
                    )
                rows.append(row)
        compiled_models = [m for m in args.compiled_step_models.split(",") if m]
        if not args.no_compiled_step and model in compiled_models:
            eager = {r: med[r] / med["adam"] for r in rules}
            rows.extend(compiled_step_rows(problem, model, rules, args, eager))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
