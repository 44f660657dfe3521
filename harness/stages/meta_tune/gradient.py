"""Meta-tuning by gradient: the paper's one-pass meta-fine-tuning through truncated unrolls.

The optimizee is trained once with the equation; every ``unroll`` steps the constants take one Adam step
on the loss of a held-out batch at the parameters reached (parameters at the window start detached; the
updates depend differentiably on the constants through :func:`~harness.symbolic.optimizer.functional_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.stages.meta_tune.common import _with_constants, constant_slots
from harness.stages.problems import build_problem, spec_budget
from harness.symbolic.equation import Equation
from harness.symbolic.optimizer import functional_step, init_functional_state, load_equation


# ---------------------------------------------------------------------------------------------------
# gradient (truncated, online)
# ---------------------------------------------------------------------------------------------------
class _Stream:
    """A batch iterator with one batch of look-ahead (the 'next' held-out batch)."""

    def __init__(self, it: Iterator[Any]) -> None:
        self.it = it
        self.buf: list[Any] = []

    def take(self) -> Any:
        return self.buf.pop(0) if self.buf else next(self.it)

    def peek(self) -> Any:
        if not self.buf:
            self.buf.append(next(self.it))
        return self.buf[0]


def _slot_constants(base: Sequence[float], slots: Sequence[Sequence[int]], u: Tensor) -> list[Tensor]:
    """Per-occurrence constants ``base * exp(u[slot])`` (additive ``u`` for zero bases) as differentiable tensors."""
    out: list[Tensor | None] = [None] * len(base)
    for s, occ in enumerate(slots):
        for i in occ:
            out[i] = base[i] * torch.exp(u[s]) if base[i] != 0.0 else base[i] + u[s]
    missing = [i for i, c in enumerate(out) if c is None]
    if missing:
        raise ValueError(f"constant occurrences {missing} are in no slot")
    return [c for c in out if c is not None]


def unrolled_meta_loss(
    module: Any,
    problem: Any,
    params: Mapping[str, Tensor],
    state: Mapping[str, Mapping[str, Tensor]],
    batches: Sequence[Any],
    holdout: Any,
    *,
    constants: Sequence[Tensor] | None = None,
    lr: float = 1.0,
    meta_loss: str = "final",
) -> tuple[Tensor, dict[str, Tensor], Mapping[str, Mapping[str, Tensor]], list[float]]:
    """Unroll ``len(batches)`` functional steps from ``params`` (detached) and return the meta-loss.

    The meta-loss is the held-out loss at the final parameters (``final``) or its mean over the parameters after
    each step (``mean``); it is differentiable w.r.t. ``constants`` (or the module's constants). Gradients of the
    optimizee loss are computed on detached copies (first-order). Returns ``(meta_loss, params, state,
    train_losses)``; a non-finite training loss stops the unroll early (the meta-loss is then NaN).
    """
    if meta_loss not in ("final", "mean"):
        raise ValueError(f"meta_loss must be 'final' or 'mean', got {meta_loss!r}")
    p = {k: v.detach() for k, v in params.items()}
    st = state
    losses: list[float] = []
    terms: list[Tensor] = []
    for batch in batches:
        with torch.enable_grad():  # optimizee gradients are needed even under no_grad
            leaf = {k: v.detach().requires_grad_(True) for k, v in p.items()}
            loss = problem.loss(leaf, batch)
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                return torch.tensor(math.nan), p, st, losses
            grads = torch.autograd.grad(loss, list(leaf.values()))
        p, st = functional_step(
            module, p, dict(zip(leaf, grads, strict=True)), st, lr=lr, constants=constants
        )
        if meta_loss == "mean":
            terms.append(problem.loss(p, holdout))
    meta = problem.loss(p, holdout) if meta_loss == "final" else torch.stack(terms).mean()
    return meta, p, st, losses


def meta_tune_gradient(
    equation: Equation | str | Path,
    optimizee: Mapping[str, Any],
    *,
    steps: int | None = None,
    unroll: int = 10,
    meta_lr: float = 0.05,
    meta_loss: str = "final",
    holdout: str = "next",
    max_multiplier: float = 10.0,
    lr: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int, float], None] | None = None,
) -> tuple[Equation, dict[str, Any]]:
    """One-pass meta-fine-tuning by truncated back-propagation through ``unroll``-step windows.

    The optimizee (seed ``seed``) is trained for ``steps`` (default: its spec's budget) with the equation; after
    each window the constants (as log multipliers ``c * exp(u)``, ``|u| <= log(max_multiplier)``; tie groups
    share ``u``) take one Adam step (``meta_lr``) on the meta-loss (:func:`unrolled_meta_loss`). The held-out
    batch is the next training batch, not yet used by the window (``holdout="next"``), or the first test batch
    (``"test"``; leaks test data into tuning, use only when the test set is not the final report).

    Returns:
        ``(tuned equation, history)``; history has per-step ``step``/``train_loss`` and per-window ``windows``
        (``end_step``, ``heldout_loss`` before the meta step, ``constants`` after it), ``diverged_at``. If
        training diverges, the constants in effect before the diverging window are returned.
    """
    if holdout not in ("next", "test"):
        raise ValueError(f"holdout must be 'next' or 'test', got {holdout!r}")
    if int(unroll) < 1 or not max_multiplier > 1.0:
        raise ValueError("unroll must be >= 1 and max_multiplier > 1")
    eq = load_equation(equation)
    torch.manual_seed(seed)
    problem = build_problem(optimizee, seed, device)
    n_steps = spec_budget(problem, optimizee, steps)
    params = problem.init_params()
    dtype = next(iter(params.values())).dtype
    module_device = next(iter(params.values())).device
    module = eq.compile(dtype=dtype).to(module_device)
    module.requires_grad_(False)
    slots = constant_slots(eq)
    base = [float(c) for c in eq.constants]
    u = torch.zeros(len(slots), dtype=dtype, device=module_device, requires_grad=True)
    meta_opt = torch.optim.Adam([u], lr=meta_lr)
    bound = math.log(max_multiplier)
    state = init_functional_state(eq, params)
    stream = _Stream(problem.batches("train"))
    test_batch = next(iter(problem.batches("test"))) if holdout == "test" else None

    def current() -> list[float]:
        """Per-occurrence constants now, in float64 (``base * exp(u)``, ``base + u`` for zero bases)."""
        vals = list(base)
        for s, occ in enumerate(slots):
            us = float(u[s].detach())
            for i in occ:
                vals[i] = base[i] * math.exp(us) if base[i] != 0.0 else us
        return vals

    hist: dict[str, Any] = {
        "step": [],
        "train_loss": [],
        "windows": [],
        "diverged_at": None,
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": holdout,
        "initial_constants": list(base),
    }
    good = list(base)
    step = 0
    while step < n_steps:
        k = min(int(unroll), n_steps - step)
        batches = [stream.take() for _ in range(k)]
        hold = stream.peek() if holdout == "next" else test_batch
        consts = _slot_constants(base, slots, u) if slots else None
        meta, params, state, losses = unrolled_meta_loss(
            module, problem, params, state, batches, hold, constants=consts, lr=lr, meta_loss=meta_loss
        )
        for i, v in enumerate(losses):
            hist["step"].append(step + i + 1)
            hist["train_loss"].append(v)
        if len(losses) < k or not math.isfinite(losses[-1]):
            hist["diverged_at"] = step + len(losses)
            break
        step += k
        params = {n: v.detach() for n, v in params.items()}
        state = {n: {kk: vv.detach() for kk, vv in s.items()} for n, s in state.items()}
        value = float(meta.detach())
        good = current()
        if slots and math.isfinite(value) and meta.requires_grad:
            meta_opt.zero_grad(set_to_none=True)
            meta.backward()
            if u.grad is not None and bool(torch.isfinite(u.grad).all()):
                meta_opt.step()
                with torch.no_grad():
                    u.clamp_(-bound, bound)
        hist["windows"].append(
            {
                "end_step": step,
                "heldout_loss": value if math.isfinite(value) else None,
                "constants": current(),
            }
        )
        if on_progress is not None:  # (training step, held-out meta-loss of the window)
            on_progress(step, value)
    final = good if hist["diverged_at"] is not None else current()
    note = {
        "method": "gradient",
        "unroll": int(unroll),
        "meta_lr": meta_lr,
        "meta_loss": meta_loss,
        "holdout": holdout,
        "steps": n_steps,
        "optimizee": dict(optimizee),
        "seed": seed,
        "initial_constants": list(base),
    }
    return _with_constants(eq, final, note), hist
