"""The settings of one meta-training run (:class:`MetaTrainConfig`), apart from the trainer.

Plain values and torch-free, so a suite's ``meta_train`` stage validates its ``settings:`` against this one
definition without importing torch (:mod:`teachers.meta_train` runs it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MetaTrainConfig"]


@dataclass
class MetaTrainConfig:
    """Everything one meta-training run needs (plain values, so it serialises to YAML/JSON).

    Budget: training stops at the first of ``episodes``, ``meta_iterations`` (meta-gradient steps, one
    per unroll) and ``time_budget_s``, or when the curriculum is exhausted.
    """

    teacher: str = "rp"
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizee: str = "quadratic_cos"
    optimizee_kwargs: dict[str, Any] = field(default_factory=dict)
    #: steps per episode when the curriculum is off
    episode_length: int = 100
    #: truncation length of back-propagation (steps per meta-gradient)
    unroll: int = 20
    meta_lr: float = 1e-3
    #: clip the meta-gradient's global norm (None = no clipping)
    grad_clip: float | None = None
    episodes: int | None = 200
    meta_iterations: int | None = None
    time_budget_s: float | None = None
    #: random scaling (Lv et al. 2017): per episode draw ``c = exp(U(-s, s))`` per coordinate; the teacher
    #: optimises ``y`` with loss ``f(c * y)`` from ``y_0 = x_0 / c`` (gradients scaled by ``c``)
    random_scaling: bool = False
    #: ``s`` of ``c = exp(U(-s, s))``
    random_scale: float = 1.0
    #: CL (Chen et al. 2020a): episode lengths follow ``cl_lengths``; after ``cl_patience`` validations in a
    #: row without improvement the teacher goes back to its best weights and the next length starts; training
    #: stops after the last length
    curriculum: bool = False
    cl_lengths: tuple[int, ...] = (100, 200, 500, 1000)
    cl_patience: int = 3
    #: IL (Chen et al. 2020a): with probability ``il_prob`` an episode imitates ``Adam(il_lr)``: Adam drives
    #: the optimizee and the meta-loss is the mean squared difference of the teacher's and Adam's updates on
    #: the same gradients, divided by ``il_lr**2`` (O(1) like the loss-based objective)
    imitation: bool = False
    il_prob: float = 0.3
    il_lr: float = 0.01
    #: validate every this many episodes (and once at the end)
    eval_every: int = 10
    #: held-out optimizee seeds for validation (never used for training episodes)
    val_seeds: tuple[int, ...] = (1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004)
    #: validation horizon in steps; None = the current episode length (the CL stage's length)
    eval_steps: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.cl_lengths = tuple(int(x) for x in self.cl_lengths)
        self.val_seeds = tuple(int(x) for x in self.val_seeds)
        if self.unroll < 1 or self.episode_length < 1:
            raise ValueError("unroll and episode_length must be >= 1")
        if self.curriculum and (not self.cl_lengths or min(self.cl_lengths) < 1):
            raise ValueError("curriculum needs a non-empty cl_lengths of positive lengths")
        if self.cl_patience < 1 or self.eval_every < 1:
            raise ValueError("cl_patience and eval_every must be >= 1")
        if not 0.0 <= self.il_prob <= 1.0:
            raise ValueError(f"il_prob must be in [0, 1], got {self.il_prob}")
        if not self.val_seeds:
            raise ValueError("val_seeds must not be empty")
        if self.episodes is None and self.meta_iterations is None and self.time_budget_s is None:
            if not self.curriculum:
                raise ValueError("set a budget: episodes, meta_iterations or time_budget_s")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cl_lengths"] = list(self.cl_lengths)
        d["val_seeds"] = list(self.val_seeds)
        return d
