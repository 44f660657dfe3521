"""Are the transfer panel's optimizees learnable, and how far do plain Adam and SGD get in their budget?

For each panel optimizee (``logreg``, ``char_lm`` with each architecture, ``autoencoder``; ``--all`` adds the
older ``mlp`` and ``quadratic_cos``) it trains from seed 0 for the optimizee's ``default_steps`` through the
harness's own training loop (:func:`harness.stages.evaluate.train`, as an evaluate trial) with Adam (lr 1e-2,
3e-3 for the sequence models) and SGD with momentum 0.9 (lr 0.1, 0.05 for the autoencoder), one torch thread, and prints
the initial test loss, the final test loss and accuracy, and the seconds of the run: wall and CPU (this
process's; on a shared machine the wall time includes waiting for a core). For ``char_lm`` it
also prints the Bayes loss (the generating chain's own NLL of the test symbols), the floor no model can beat.

The learning rates are sensible defaults, not tuned per target. With ``--json`` the last line is a list of
``{"optimizee", "optimizer", "steps", "init_test_loss", "test_loss", "test_acc", "seconds", "cpu_seconds",
"floor"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import torch

from harness.stages.evaluate import train
from harness.stages.problems import build_problem
from harness.training.optimizers import build_optimizer

#: (label, optimizee spec, Adam lr, SGD lr)
PANEL: list[tuple[str, dict[str, Any], float, float]] = [
    ("logreg-digits", {"name": "logreg", "kwargs": {"dataset": "digits"}}, 1e-2, 0.1),
    ("logreg-mnist1d", {"name": "logreg", "kwargs": {"dataset": "mnist1d"}}, 1e-2, 0.1),
    ("char_lm-gru", {"name": "char_lm", "kwargs": {"arch": "gru"}}, 3e-3, 0.1),
    ("char_lm-lstm", {"name": "char_lm", "kwargs": {"arch": "lstm"}}, 3e-3, 0.1),
    ("char_lm-transformer", {"name": "char_lm", "kwargs": {"arch": "transformer"}}, 3e-3, 0.1),
    ("autoencoder-digits", {"name": "autoencoder", "kwargs": {"dataset": "digits"}}, 1e-2, 0.05),
]
OLDER: list[tuple[str, dict[str, Any], float, float]] = [
    ("mlp-digits", {"name": "mlp", "kwargs": {"dataset": "digits"}}, 1e-2, 0.1),
    ("quadratic_cos", {"name": "quadratic_cos", "kwargs": {}}, 1e-2, 1e-3),
]


def run(entries: list[tuple[str, dict[str, Any], float, float]]) -> list[dict[str, Any]]:
    """One Adam and one SGD-momentum run per entry; a row of figures per run."""
    rows = []
    for label, spec, adam_lr, sgd_lr in entries:
        for name, config in (
            (f"adam {adam_lr:g}", {"family": "adam", "lr": adam_lr}),
            (f"sgd {sgd_lr:g} m0.9", {"family": "sgd", "lr": sgd_lr, "momentum": 0.9}),
        ):
            torch.manual_seed(0)  # as an evaluate trial does
            problem = build_problem(spec, seed=0)
            init = problem.evaluate(problem.init_params())["test_loss"]
            floor = getattr(problem, "bayes_test_loss", math.nan)
            steps = problem.default_steps
            cpu = time.process_time()
            res = train(
                problem,
                lambda params, config=config, steps=steps: build_optimizer(config, params, steps),
                steps,
                measure_cost=False,
            )
            cpu = time.process_time() - cpu
            rows.append(
                {
                    "optimizee": label,
                    "optimizer": name,
                    "steps": res.steps,
                    "init_test_loss": init,
                    "test_loss": res.test_loss,
                    "test_acc": res.test_acc,
                    "seconds": res.wall_time_s,
                    "cpu_seconds": cpu,
                    "floor": floor,
                }
            )
            acc = "" if res.test_acc is None else f"  acc {res.test_acc:.3f}"
            low = "" if math.isnan(floor) else f"  (Bayes {floor:.3f})"
            print(
                f"{label:22s} {name:14s} {res.steps:5d} steps  test loss {init:.3f} -> {res.test_loss:.3f}"
                f"{low}{acc}  {res.wall_time_s:.1f} s wall, {cpu:.1f} s CPU",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--all", action="store_true", help="also the older mlp and quadratic_cos")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on the last line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(PANEL + (OLDER if args.all else []))
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
