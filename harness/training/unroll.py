"""The unrolled training loop, written once: teacher meta-training and gradient meta-tuning both run it.

One :func:`unroll` call is one truncation window of back-propagation through time: from ``x_0`` (detached,
so nothing flows into an earlier window) and its gradient ``g_0``, each batch ``b_k`` makes one step
``x_k, state = step(x_{k-1}, g_{k-1}, state)`` and one evaluation ``f_k = loss(x_k, b_k)``. The gradients
``g_k = d f_k / d x_k`` are detached (first-order, as in L2O practice), so the meta-gradient flows through the
update path and the step's own state only. Pure torch (no Ray, no MLflow).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

S = TypeVar("S")
Params = dict[str, Tensor]
#: ``loss(params, batch) -> scalar``; differentiable w.r.t. ``params``
LossFn = Callable[[Mapping[str, Tensor], Any], Tensor]
#: ``step(params, grads, state) -> (new params, new state)``; must not mutate ``params``
StepFn = Callable[[Params, Params, S], tuple[Params, S]]
META_LOSSES = ("mean", "final")

__all__ = ["META_LOSSES", "LossFn", "StepFn", "Unrolled", "loss_and_grads", "unroll"]


def loss_and_grads(
    loss: LossFn, params: Mapping[str, Tensor], batch: Any, *, keep_graph: bool = False
) -> tuple[Tensor, Params]:
    """``loss(params, batch)`` and its gradient w.r.t. ``params`` (detached; zeros where unused).

    ``keep_graph=False`` evaluates at detached copies and returns a detached loss (nothing is kept);
    ``keep_graph=True`` evaluates at ``params`` themselves (a parameter that does not require grad is
    replaced by a detached leaf) and keeps the graph, so the loss can enter a meta-loss.
    """
    with torch.enable_grad():  # optimizee gradients are needed even under no_grad
        if keep_graph:
            at = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()}
        else:
            at = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        value = loss(at, batch)
        raw = torch.autograd.grad(value, list(at.values()), retain_graph=keep_graph, allow_unused=True)
    grads = {
        k: (g if g is not None else torch.zeros_like(v)).detach()
        for (k, v), g in zip(at.items(), raw, strict=True)
    }
    return (value if keep_graph else value.detach()), grads


@dataclass
class Unrolled(Generic[S]):
    """What one window produced.

    ``meta_loss`` is a scalar tensor differentiable w.r.t. whatever the step depends on (None when
    ``meta_loss=None``; NaN when the window diverged). ``params`` are the last iterate (detached),
    ``grads`` the detached gradient there (the next window's first input), ``state`` the step's state
    after the last step taken (as the step left it: detach it between windows), ``train_losses`` the
    training losses ``f_1..f_k`` of the steps taken; ``diverged``: a training loss or the last gradient was
    not finite (the window stops at that step).
    """

    meta_loss: Tensor | None
    params: Params
    state: S
    grads: Params
    train_losses: list[float] = field(default_factory=list)
    diverged: bool = False


def unroll(
    step: StepFn[S],
    loss: LossFn,
    params: Mapping[str, Tensor],
    state: S,
    grads: Mapping[str, Tensor],
    batches: Iterable[Any],
    *,
    meta_loss: str | None = "mean",
    holdout: Any = None,
) -> Unrolled[S]:
    """Run one truncated window: one ``step`` per training batch in ``batches`` (see the module docstring).

    Args:
        step: the optimizer update, differentiable in what is being meta-learned.
        loss: the training objective ``loss(params, batch)`` (e.g. ``problem.loss``, or a rescaled one).
        params: ``x_0`` (detached here); grads: the gradient at ``x_0`` (e.g. from :func:`loss_and_grads`).
        batches: the window's training batches (a finite iterable; its length is the window's length).
        meta_loss: ``"mean"`` (``mean_k f_k``, the paper's eq. 1 with ``w_t = 1``), ``"final"`` (``f_K``), or
            None (no meta-loss: the caller builds its own, e.g. teacher IL's imitation loss).
        holdout: a batch the meta-loss is measured on instead of the training batches (None: them);
            gradient meta-tuning's validation batch.
    """
    if meta_loss is not None and meta_loss not in META_LOSSES:
        raise ValueError(f"meta_loss must be one of {', '.join(META_LOSSES)} or None, got {meta_loss!r}")
    p: Params = {k: v.detach() for k, v in params.items()}
    g: Params = dict(grads)
    st = state
    losses: list[float] = []
    total: Tensor | float = 0.0
    last: Tensor | None = None
    it = iter(batches)
    end = object()
    upcoming = next(it, end)
    while upcoming is not end:
        batch, upcoming = upcoming, next(it, end)
        p, st = step(p, g, st)
        reads_train = holdout is None and (meta_loss == "mean" or (meta_loss == "final" and upcoming is end))
        f, g = loss_and_grads(loss, p, batch, keep_graph=reads_train)
        value = float(f.detach())
        losses.append(value)
        if not math.isfinite(value):
            return Unrolled(
                None if meta_loss is None else _nan(f), _detached(p), st, g, losses, diverged=True
            )
        if meta_loss is None:
            continue
        term = (
            f if holdout is None else (loss(p, holdout) if meta_loss == "mean" or upcoming is end else None)
        )
        if term is not None:
            total = total + term
            last = term
    if not losses:
        raise ValueError("unroll needs at least one batch")
    diverged = not all(bool(torch.isfinite(v).all()) for v in g.values())
    meta: Tensor | None = None
    if meta_loss == "mean" and isinstance(total, Tensor):
        meta = total / len(losses)
    elif meta_loss == "final":
        meta = last
    if diverged and meta is not None:
        meta = _nan(meta)
    return Unrolled(meta, _detached(p), st, g, losses, diverged)


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


def _nan(like: Tensor) -> Tensor:
    return torch.full((), math.nan, dtype=like.dtype, device=like.device)
