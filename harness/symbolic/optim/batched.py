"""Flat buckets: many small parameters stepped as one tensor (the foreach idea) by
:class:`~harness.symbolic.optim.optimizer.SymbolicOptimizer`.

A :class:`FlatBucket` owns one flat buffer per state tensor for parameters of one param group, device and
dtype; each parameter's state entries are views into them, in the per-parameter layout. A step runs
:func:`~harness.symbolic.optim.step.program_update` on the concatenated coordinates, so results agree with
the per-tensor path to float rounding. A bucket that no longer matches the optimizer's state is rebuilt
(``docs/symbolic.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["DEFAULT_BATCH_NUMEL", "BucketSet", "FlatBucket", "UpdateFn"]

#: parameters with at most this many elements are batched into flat buckets (larger ones are stepped in
#: place, chunk by chunk, where per-tensor overhead is negligible and a copy through a workspace is not)
DEFAULT_BATCH_NUMEL = 1 << 16

# torch's foreach kernels (what ``torch.optim.Adam(foreach=True)`` runs); private names, bound once
_foreach_copy_ = torch._foreach_copy_  # pyright: ignore[reportPrivateImportUsage]
_foreach_add_ = torch._foreach_add_  # pyright: ignore[reportPrivateImportUsage]

UpdateFn = Callable[[Tensor, Mapping[str, Tensor], Mapping[str, Tensor], int], Any]
"""``(flat gradient, accumulators, rings, t) -> update``: one in-place symbolic step on flat coordinates
(:func:`~harness.symbolic.optim.optimizer.program_update` with its program bound)."""


class FlatBucket:
    """Flat state buffers for ``params`` (one device and dtype, one step count ``step``).

    Args:
        params: the parameters, in a fixed order.
        states: their ``optimizer.state`` dicts (possibly empty: fresh state); entries for ``acc_keys`` and
            ring keys are copied into the flat buffers and replaced by views of them.
        acc_keys: accumulator names (each shaped like its parameter).
        rings: ``(key, slots, fill)`` of every lag ring (state key, e.g. ``hist_<feature>``, shaped
            ``[slots, *p.shape]``; ``fill``: the value of a lag not seen yet).
        step: the step count all of ``params`` share. Each parameter's ``state["step"]`` becomes a 0-dim
            float32 view of one ``[len(params)]`` buffer (a tensor, as torch's optimizers keep it).
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        states: Sequence[MutableMapping[str, Any]],
        acc_keys: Sequence[str],
        rings: Sequence[tuple[str, int, float]],
        step: int,
    ) -> None:
        p0 = params[0]
        kw: dict[str, Any] = {"dtype": p0.dtype, "device": p0.device}
        n = sum(p.numel() for p in params)
        self.params: list[Tensor] = list(params)
        self.states: list[MutableMapping[str, Any]] = list(states)
        self.step = int(step)
        self.acc: dict[str, Tensor] = {k: torch.zeros(n, **kw) for k in acc_keys}
        self.rings: dict[str, Tensor] = {
            key: torch.full((slots, n), fill, **kw) for key, slots, fill in rings
        }
        self.work = torch.empty(n, **kw)
        self.steps = torch.full((len(self.params),), float(self.step), dtype=torch.float32, device=p0.device)
        self.work_views: list[Tensor] = []
        self.views: list[dict[str, Tensor]] = []
        a = 0
        for p, st in zip(self.params, self.states, strict=True):
            b = a + p.numel()
            self.work_views.append(self.work[a:b].view(p.shape))
            views: dict[str, Tensor] = {}
            with torch.no_grad():
                for k, flat in self.acc.items():
                    views[k] = self._adopt(flat[a:b], st.get(k), p.shape)
                for key, ring in self.rings.items():
                    views[key] = self._adopt(ring[:, a:b], st.get(key), (ring.shape[0], *p.shape))
            views["step"] = self.steps[len(self.views)]
            st.update(views)
            self.views.append(views)
            a = b

    @staticmethod
    def _adopt(block: Tensor, old: Any, shape: Sequence[int]) -> Tensor:
        """``block`` viewed as ``shape``, holding ``old``'s values when there are any."""
        view = block.view(tuple(shape))
        if isinstance(old, Tensor):
            view.copy_(old.reshape(view.shape))
        return view

    @property
    def numel(self) -> int:
        return self.work.numel()

    def valid(self) -> bool:
        """Whether the optimizer state still holds this bucket's views and step count for every parameter."""
        for st, views in zip(self.states, self.views, strict=True):
            for k, v in views.items():
                if st.get(k) is not v:
                    return False
        return True

    @torch.no_grad()
    def step_(
        self, grads: Sequence[Tensor], update: UpdateFn, lr: float, chunk_size: int, maximize: bool = False
    ) -> None:
        """One step of every parameter: ``p += lr * update(...)`` over the flat coordinates, chunk by chunk
        (``maximize``: of the negated gradients)."""
        _foreach_copy_(self.work_views, list(grads))
        if maximize:
            self.work.neg_()
        t = self.step + 1
        g = self.work
        n = g.numel()
        for a in range(0, n, chunk_size):
            b = min(a + chunk_size, n)
            whole = a == 0 and b == n
            gc = g if whole else g[a:b]
            acc = self.acc if whole else {k: v[a:b] for k, v in self.acc.items()}
            hist = self.rings if whole else {f: r[:, a:b] for f, r in self.rings.items()}
            upd = update(gc, acc, hist, t)
            if isinstance(upd, Tensor):
                gc.copy_(upd)  # this chunk's gradient is no longer needed: the workspace takes the update
            else:
                gc.fill_(float(upd))
        _foreach_add_(self.params, self.work_views, alpha=lr)
        self.step = t
        self.steps.add_(1)


class BucketSet:
    """The small parameters of one param group, device and dtype that had gradients at the last step, in one
    :class:`FlatBucket` per step count; a parameter alone at its step count is left to the per-tensor path.

    Args:
        params: the parameters, in the optimizer's order.
        states: their ``optimizer.state`` dicts, in the same order.
        acc_keys, rings: see :class:`FlatBucket`.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        states: Sequence[MutableMapping[str, Any]],
        acc_keys: Sequence[str],
        rings: Sequence[tuple[str, int, float]],
    ) -> None:
        self.params: list[Tensor] = list(params)
        self.states: list[MutableMapping[str, Any]] = list(states)
        by_step: dict[int, list[int]] = {}
        for i, st in enumerate(self.states):
            by_step.setdefault(int(st["step"]) if "step" in st else 0, []).append(i)
        self.buckets: list[tuple[FlatBucket, list[int]]] = []
        self.alone: list[int] = []
        for step, idx in by_step.items():
            if len(idx) == 1:
                self.alone.extend(idx)
                continue
            members = [self.params[i] for i in idx]
            bucket = FlatBucket(members, [self.states[i] for i in idx], acc_keys, rings, step)
            self.buckets.append((bucket, idx))

    def matches(self, params: Sequence[Tensor]) -> bool:
        """Whether ``params`` are this set's parameters in the same order and every bucket is still valid."""
        mine = self.params
        if len(params) != len(mine) or any(p is not q for p, q in zip(params, mine, strict=True)):
            return False
        return all(b.valid() for b, _ in self.buckets)

    def step_(
        self,
        grads: Sequence[Tensor],
        update: UpdateFn,
        lr: float,
        chunk_size: int,
        step_alone: Callable[[Tensor, Tensor, MutableMapping[str, Any]], None],
        maximize: bool = False,
    ) -> None:
        """Step every parameter (``grads`` in :attr:`params` order); ``step_alone(p, grad, state)`` steps the
        rest."""
        if len(self.buckets) == 1 and not self.alone:
            self.buckets[0][0].step_(grads, update, lr, chunk_size, maximize)
            return
        for bucket, idx in self.buckets:
            bucket.step_([grads[i] for i in idx], update, lr, chunk_size, maximize)
        for i in self.alone:
            step_alone(self.params[i], grads[i], self.states[i])
