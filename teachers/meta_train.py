"""Meta-training of a teacher by truncated back-propagation through unrolled optimization (pure torch).

The meta-objective is the paper's eq. 1 with ``w_t = 1``: per unroll of ``unroll`` (20) steps, the mean of
``f(x_k)`` over the new iterates, back-propagated into the teacher's weights (first-order: the gradients fed
to the features are constants), then parameters and states are detached and the episode goes on. The window
is :func:`harness.training.unroll.unroll`. Random scaling, curriculum (CL) and imitation (IL) are switches of
:class:`MetaTrainConfig`. :class:`MetaTrainer` resumes from its ``state_dict()``; :func:`meta_train` is the
one-call convenience.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.features import FeatureState
from harness.registry import OPTIMIZEES
from harness.training.unroll import LossFn, Params, loss_and_grads, unroll
from optimizees.base import Optimizee
from teachers.base import State, Teacher, build_teacher, detach_state
from teachers.config import MetaTrainConfig
from teachers.rules import AdamRule

#: ``callback(episode, metrics)``; a truthy return value stops the run
Callback = Callable[[int, dict[str, Any]], object]
OptimizeeFactory = Callable[[int], Optimizee]


# ------------------------------------------------------------------------------------------------
# config / result
# ------------------------------------------------------------------------------------------------
@dataclass
class MetaTrainResult:
    """Outcome of :func:`meta_train`: the best teacher weights (by validation) and the run's history."""

    teacher_name: str
    teacher_kwargs: dict[str, Any]
    best_state_dict: dict[str, Tensor]
    best_val_loss: float
    best_episode: int
    history: list[dict[str, Any]]
    episodes: int
    meta_iterations: int
    elapsed_s: float
    stop_reason: str
    final_episode_length: int

    def teacher(self) -> Teacher:
        """A teacher built from the registry with the best weights loaded."""
        t = build_teacher(self.teacher_name, self.teacher_kwargs)
        t.load_state_dict(self.best_state_dict)
        return t

    def save(self, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> Path:
        """Write the best teacher as a ``teachers.checkpoint`` file (meta gets the run summary)."""
        from teachers.checkpoint import save_teacher

        info = {
            "best_val_loss": self.best_val_loss,
            "best_episode": self.best_episode,
            "episodes": self.episodes,
            "meta_iterations": self.meta_iterations,
            "stop_reason": self.stop_reason,
        }
        info.update(meta or {})
        return save_teacher(self.teacher(), path, info)


# ------------------------------------------------------------------------------------------------
# curriculum
# ------------------------------------------------------------------------------------------------
class Curriculum:
    """Episode-length curriculum: advance after ``patience`` validations in a row without improvement.

    :meth:`report` returns ``"improved"``, ``"wait"``, ``"advance"`` (now at the next length; the
    stage best is reset since the horizon changes) or ``"done"`` (patience ran out at the last length).
    """

    def __init__(self, lengths: Sequence[int], patience: int = 3) -> None:
        self.lengths = tuple(int(x) for x in lengths)
        self.patience = int(patience)
        self.stage = 0
        self.best = math.inf
        self.bad = 0
        self.done = False

    @property
    def length(self) -> int:
        return self.lengths[self.stage]

    def report(self, val_loss: float) -> str:
        if self.done:
            return "done"
        if val_loss < self.best:
            self.best, self.bad = float(val_loss), 0
            return "improved"
        self.bad += 1
        if self.bad < self.patience:
            return "wait"
        if self.stage + 1 < len(self.lengths):
            self.stage += 1
            self.best, self.bad = math.inf, 0
            return "advance"
        self.done = True
        return "done"

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "best": self.best, "bad": self.bad, "done": self.done}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.stage, self.best = int(sd["stage"]), float(sd["best"])
        self.bad, self.done = int(sd["bad"]), bool(sd["done"])


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def optimizee_factory(
    name: str, kwargs: Mapping[str, Any] | None = None, device: str = "cpu"
) -> OptimizeeFactory:
    """``seed -> Optimizee`` for a registered optimizee with fixed kwargs (checked against its kwargs model)."""
    OPTIMIZEES.check_kwargs(name, dict(kwargs or {}), f"optimizee {name!r}")
    cls = OPTIMIZEES.get(name)
    return functools.partial(_make, cls, dict(kwargs or {}), device)


def _make(cls: Callable[..., Optimizee], kwargs: dict[str, Any], device: str, seed: int) -> Optimizee:
    return cls(seed=seed, device=device, **kwargs)


def _flat(grads: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads.values()])


def _add_flat(params: Mapping[str, Tensor], update: Tensor) -> dict[str, Tensor]:
    out, offset = {}, 0
    for k, p in params.items():
        n = p.numel()
        out[k] = p + update[offset : offset + n].view_as(p)
        offset += n
    return out


def _scaled_loss(optimizee: Optimizee, scale: Mapping[str, Tensor] | None) -> LossFn:
    """``optimizee.loss`` at ``scale * params`` (random scaling), or the loss itself."""
    if scale is None:
        return optimizee.loss  # type: ignore[return-value]
    return lambda params, batch: optimizee.loss({k: p * scale[k] for k, p in params.items()}, batch)


def run_teacher(
    teacher: Teacher, optimizee: Optimizee, steps: int, params: Mapping[str, Tensor] | None = None
) -> list[float]:
    """Optimise ``optimizee`` for ``steps`` steps with ``teacher`` (no meta-gradient).

    Returns the ``steps + 1`` training losses at ``x_0 .. x_steps`` (each on that step's train batch).
    Stops early (padding with ``inf``) once the loss is not finite.
    """
    x = {k: v.detach() for k, v in (params or optimizee.init_params()).items()}
    n = sum(v.numel() for v in x.values())
    device = next(iter(x.values())).device
    fstate = teacher.new_feature_state(n, device)

    def step(p: Params, grads: Params, tstate: State) -> tuple[Params, State]:
        with torch.no_grad():
            update, tstate = teacher(fstate.update(_flat(grads)), tstate)
            return _add_flat(p, update), tstate

    batches, loss = optimizee.batches("train"), _scaled_loss(optimizee, None)
    f0, g = loss_and_grads(loss, x, next(batches))
    losses = [float(f0)]
    if math.isfinite(losses[0]) and steps > 0:
        tstate = teacher.init_state(n, device)
        losses += unroll(
            step, loss, x, tstate, g, itertools.islice(batches, steps), meta_loss=None
        ).train_losses
    return losses + [math.inf] * (steps + 1 - len(losses))


def evaluate_teacher(
    teacher: Teacher,
    optimizee_factory: OptimizeeFactory,
    seeds: Iterable[int],
    steps: int,
    tail: int = 1,
) -> float:
    """Mean over ``seeds`` of the final training loss after ``steps`` teacher steps.

    "Final" is the mean of the last ``tail`` losses of the trajectory (``tail=1``: the loss at
    ``x_steps``). A diverged run counts as ``inf``. Works for hand-written rules too (baselines).
    """
    vals = []
    was_training = teacher.training
    teacher.eval()
    try:
        for seed in seeds:
            losses = run_teacher(teacher, optimizee_factory(int(seed)), int(steps))
            last = losses[-max(1, int(tail)) :]
            vals.append(sum(last) / len(last))
    finally:
        teacher.train(was_training)
    mean = sum(vals) / max(len(vals), 1)
    return mean if math.isfinite(mean) else math.inf


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
class MetaTrainer:
    """Stateful meta-training loop; :meth:`run` continues until the budget is spent.

    Args:
        cfg: the run's configuration.
        teacher: optional pre-built teacher (default: ``build_teacher(cfg.teacher, cfg.teacher_kwargs)``
            seeded by ``cfg.seed``).
        factory: optional ``seed -> Optimizee`` (default: from ``cfg.optimizee`` / ``optimizee_kwargs``).
    """

    def __init__(
        self, cfg: MetaTrainConfig, teacher: Teacher | None = None, factory: OptimizeeFactory | None = None
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if teacher is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                teacher = build_teacher(cfg.teacher, cfg.teacher_kwargs)
        if not teacher.learnable:
            raise ValueError(f"teacher {cfg.teacher!r} has no trainable parameters; nothing to meta-train")
        self.teacher = teacher.to(self.device)
        self.factory = factory or optimizee_factory(cfg.optimizee, cfg.optimizee_kwargs, cfg.device)
        self.meta_opt = torch.optim.Adam(self.teacher.parameters(), lr=cfg.meta_lr)
        self.curriculum = Curriculum(cfg.cl_lengths, cfg.cl_patience) if cfg.curriculum else None
        self.rng = random.Random(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.episode = 0
        self.meta_iterations = 0
        self.elapsed_s = 0.0
        #: when the running :meth:`run` started (``time.monotonic``), None between runs
        self._run_started: float | None = None
        self.best_val = math.inf
        self.best_episode = -1
        self.best_state: dict[str, Tensor] = self._snapshot()
        self.history: list[dict[str, Any]] = []
        self.stop_reason = ""
        self._validated_at = -1

    # -- small pieces -------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.teacher.state_dict().items()}

    @property
    def episode_length(self) -> int:
        return self.curriculum.length if self.curriculum is not None else self.cfg.episode_length

    @property
    def eval_steps(self) -> int:
        return self.cfg.eval_steps if self.cfg.eval_steps is not None else self.episode_length

    def _next_train_seed(self) -> int:
        val = set(self.cfg.val_seeds)
        while True:
            s = self.rng.randrange(2**31)
            if s not in val:
                return s

    def _out_of_time(self, started: float) -> bool:
        budget = self.cfg.time_budget_s
        return budget is not None and self.elapsed_s + time.monotonic() - started >= budget

    def _budget_left(self, started: float) -> str:
        cfg = self.cfg
        if cfg.episodes is not None and self.episode >= cfg.episodes:
            return "episodes"
        if cfg.meta_iterations is not None and self.meta_iterations >= cfg.meta_iterations:
            return "meta_iterations"
        if self._out_of_time(started):
            return "time_budget"
        if self.curriculum is not None and self.curriculum.done:
            return "curriculum_done"
        return ""

    # -- one episode ----------------------------------------------------------------------------------
    def train_episode(self, started: float | None = None) -> dict[str, Any]:
        """Run one episode on a fresh optimizee (meta-gradient step after every unroll)."""
        started = time.monotonic() if started is None else started
        cfg = self.cfg
        seed = self._next_train_seed()
        imitate = cfg.imitation and self.rng.random() < cfg.il_prob
        optimizee = self.factory(seed)
        x = {k: v.detach().to(self.device) for k, v in optimizee.init_params().items()}
        scale = None
        if cfg.random_scaling:
            scale = {
                k: torch.exp((2 * torch.rand(v.shape, generator=self.gen) - 1) * cfg.random_scale)
                for k, v in x.items()
            }
            scale = {k: v.to(self.device) for k, v in scale.items()}
            x = {k: v / scale[k] for k, v in x.items()}
        n = sum(v.numel() for v in x.values())
        fstate = self.teacher.new_feature_state(n, self.device)
        tstate: State = self.teacher.init_state(n, self.device)
        expert: tuple[AdamRule, FeatureState] | None = None  # the imitated rule and its own features
        if imitate:
            rule = AdamRule(lr=cfg.il_lr)
            expert = (rule, rule.new_feature_state(n, self.device))
        imitation: list[Tensor] = []  # IL: this unroll's per-step imitation losses

        def step(p: Params, grads: Params, ts: State) -> tuple[Params, State]:
            g = _flat(grads)
            update, ts = self.teacher(fstate.update(g), ts)
            if expert is None:
                return _add_flat(p, update), ts
            adam, efstate = expert
            with torch.no_grad():
                target, _ = adam(efstate.update(g), {})
            imitation.append((update - target).square().mean() / cfg.il_lr**2)
            return _add_flat(p, target), ts  # the expert drives the trajectory

        loss = _scaled_loss(optimizee, scale)
        batches = optimizee.batches("train")
        self.teacher.train()
        _, g = loss_and_grads(loss, x, next(batches))
        length, done, unroll_losses, diverged = self.episode_length, 0, [], False
        while done < length:
            k_steps = min(cfg.unroll, length - done)
            imitation.clear()
            window = itertools.islice(batches, k_steps)
            res = unroll(step, loss, x, tstate, g, window, meta_loss=None if imitate else "mean")
            meta_loss = sum(imitation) / k_steps if imitate else res.meta_loss
            assert isinstance(meta_loss, Tensor)  # unroll >= 1 and done < length: never empty
            value = float(meta_loss.detach())
            if res.diverged or not math.isfinite(value):
                diverged = True
                self.meta_opt.zero_grad(set_to_none=True)
                break
            self.meta_opt.zero_grad(set_to_none=True)
            meta_loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.teacher.parameters(), cfg.grad_clip)
            self.meta_opt.step()
            self.meta_iterations += 1
            unroll_losses.append(value)
            x, g, tstate = res.params, res.grads, detach_state(res.state)
            done += k_steps
            if cfg.meta_iterations is not None and self.meta_iterations >= cfg.meta_iterations:
                break
            if self._out_of_time(started):
                break
        self.episode += 1
        return {
            "episode": self.episode,
            "meta_iterations": self.meta_iterations,
            "meta_loss": sum(unroll_losses) / len(unroll_losses) if unroll_losses else math.nan,
            "imitation": imitate,
            "diverged": diverged,
            "episode_length": length,
            "steps": done,
            "optimizee_seed": seed,
        }

    # -- validation -----------------------------------------------------------------------------------
    def validate(self) -> float:
        """Mean final training loss of the current teacher on the held-out ``val_seeds``."""
        return evaluate_teacher(self.teacher, self.factory, self.cfg.val_seeds, self.eval_steps)

    def _after_validation(self, val: float) -> str:
        """Track the best weights; drive the curriculum. Returns the curriculum event or ""."""
        self._validated_at = self.episode
        if val < self.best_val:
            self.best_val, self.best_episode, self.best_state = val, self.episode, self._snapshot()
        if self.curriculum is None:
            return ""
        event = self.curriculum.report(val)
        if event in ("advance", "done"):
            self.teacher.load_state_dict(self.best_state)  # go on from (or end with) the best weights
            if event == "advance" and self.cfg.eval_steps is None:
                self.best_val = math.inf  # the validation horizon changes with the stage
        return event

    # -- loop ----------------------------------------------------------------------------------------------
    def run(self, callback: Callback | None = None) -> MetaTrainResult:
        """Train until the budget is spent; ``callback(episode, metrics)`` after every episode (a truthy
        return value stops the run). Checkpoint from the callback with :meth:`state_dict`."""
        started = self._run_started = time.monotonic()
        try:
            while not (reason := self._budget_left(started)):
                metrics = self.train_episode(started)
                if self.episode % self.cfg.eval_every == 0:
                    val = self.validate()
                    metrics["val_loss"] = val
                    metrics["cl_event"] = self._after_validation(val)
                metrics["best_val_loss"] = self.best_val
                metrics["cl_stage"] = self.curriculum.stage if self.curriculum is not None else 0
                metrics["elapsed_s"] = self.elapsed_s + time.monotonic() - started
                self.history.append(metrics)
                if callback is not None and callback(self.episode, dict(metrics)):
                    reason = "callback"
                    break
            self.stop_reason = reason
            if self._validated_at != self.episode and not (self.curriculum and self.curriculum.done):
                val = self.validate()
                self._validated_at = self.episode
                if val < self.best_val or self.best_episode < 0:
                    self.best_val, self.best_episode, self.best_state = val, self.episode, self._snapshot()
                if self.history:
                    self.history[-1]["val_loss"] = val
                    self.history[-1]["best_val_loss"] = self.best_val
        finally:
            self.elapsed_s += time.monotonic() - started
            self._run_started = None
        return self.result()

    def result(self) -> MetaTrainResult:
        return MetaTrainResult(
            teacher_name=self.cfg.teacher if self.teacher.name == "" else self.teacher.name,
            teacher_kwargs=dict(self.teacher.kwargs),
            best_state_dict={k: v.clone() for k, v in self.best_state.items()},
            best_val_loss=self.best_val,
            best_episode=self.best_episode,
            history=list(self.history),
            episodes=self.episode,
            meta_iterations=self.meta_iterations,
            elapsed_s=self.elapsed_s,
            stop_reason=self.stop_reason,
            final_episode_length=self.episode_length,
        )

    # -- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume at an episode boundary (loadable with ``weights_only=True``)."""
        return {
            "format": "sl2o-metatrainer/1",
            "config": self.cfg.to_dict(),
            "teacher": self._snapshot(),
            "meta_opt": self.meta_opt.state_dict(),
            "best_state": {k: v.clone() for k, v in self.best_state.items()},
            "best_val": self.best_val,
            "best_episode": self.best_episode,
            "episode": self.episode,
            "meta_iterations": self.meta_iterations,
            # the time spent so far, this run included: a resumed run continues the budget, not restarts it
            "elapsed_s": self.elapsed_s
            + (time.monotonic() - self._run_started if self._run_started is not None else 0.0),
            "validated_at": self._validated_at,
            "curriculum": self.curriculum.state_dict() if self.curriculum is not None else None,
            "py_rng": _rng_to_plain(self.rng.getstate()),
            "torch_rng": self.gen.get_state(),
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("format") != "sl2o-metatrainer/1":
            raise ValueError(f"not a MetaTrainer state (format {sd.get('format')!r})")
        self.teacher.load_state_dict(sd["teacher"])
        self.meta_opt.load_state_dict(sd["meta_opt"])
        self.best_state = {k: v.clone().to(self.device) for k, v in sd["best_state"].items()}
        self.best_val = float(sd["best_val"])
        self.best_episode = int(sd["best_episode"])
        self.episode = int(sd["episode"])
        self.meta_iterations = int(sd["meta_iterations"])
        self.elapsed_s = float(sd["elapsed_s"])
        self._validated_at = int(sd["validated_at"])
        if self.curriculum is not None and sd["curriculum"] is not None:
            self.curriculum.load_state_dict(sd["curriculum"])
        self.rng.setstate(_rng_from_plain(sd["py_rng"]))
        self.gen.set_state(sd["torch_rng"])
        self.history = copy.deepcopy(list(sd["history"]))


def _rng_to_plain(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_plain(plain: Sequence[Any]) -> tuple[Any, ...]:
    version, internal, gauss = plain
    return (int(version), tuple(int(v) for v in internal), gauss)


def meta_train(
    cfg: MetaTrainConfig, callback: Callback | None = None, resume: Mapping[str, Any] | None = None
) -> MetaTrainResult:
    """Meta-train ``cfg.teacher`` on ``cfg.optimizee``; ``resume`` is a :meth:`MetaTrainer.state_dict`."""
    trainer = MetaTrainer(cfg)
    if resume is not None:
        trainer.load_state_dict(resume)
    return trainer.run(callback)


__all__ = [
    "Curriculum",
    "MetaTrainConfig",
    "MetaTrainResult",
    "MetaTrainer",
    "evaluate_teacher",
    "meta_train",
    "optimizee_factory",
    "run_teacher",
]
