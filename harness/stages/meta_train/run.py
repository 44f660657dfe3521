"""Meta-train one teacher on one optimizee distribution from one seed (a pure wrapper of
:mod:`teachers.meta_train`): settings to a ``MetaTrainConfig``, resume from a trainer state, artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.jsonio import write_json
from harness.stages.meta_train.settings import INITIAL_VAL_KEY, LEARN_MARGIN
from harness.stages.outputs import HISTORY_FILE, TEACHER_FILE
from teachers.meta_train import MetaTrainConfig, MetaTrainer, MetaTrainResult


@dataclass
class MetaTrainOutcome:
    """A finished meta-training and the validation loss of the teacher before it (its initialisation)."""

    result: MetaTrainResult
    initial_val_loss: float

    @property
    def learned(self) -> bool:
        """Whether the kept teacher's validation loss is clearly (by :data:`LEARN_MARGIN`) below the start.

        A teacher that did not learn still yields a checkpoint, but its rule is whatever its initial
        weights do; distilling it gives a fit to noise or a near-constant (the run summary says so).
        """
        best, start = self.result.best_val_loss, self.initial_val_loss
        if not (math.isfinite(best) and math.isfinite(start)):
            return math.isfinite(best) and not math.isfinite(start)
        return best < start - LEARN_MARGIN * abs(start)


def run_meta_train(
    cfg: MetaTrainConfig,
    *,
    resume: Mapping[str, Any] | None = None,
    on_episode: Callable[[MetaTrainer, dict[str, Any]], Any] | None = None,
) -> MetaTrainOutcome:
    """Run (or continue from ``resume``: ``trainer.state_dict()`` plus ``initial_val_loss``) one meta-training.

    The teacher is validated once before training; ``on_episode(trainer, metrics)`` is called after each
    episode (progress, checkpoints) with that initial loss in ``metrics["initial_val_loss"]`` (a checkpoint
    keeps it beside the trainer state); a truthy return value stops the run early.
    """
    trainer = MetaTrainer(cfg)
    initial = math.nan
    if resume is not None:
        state = dict(resume)
        initial = float(state.pop(INITIAL_VAL_KEY, math.nan))
        trainer.load_state_dict(state)
    if not math.isfinite(initial) and resume is None:
        initial = trainer.validate()
    callback: Callable[[int, dict[str, Any]], Any] | None = None
    if on_episode is not None:
        hook = on_episode

        def per_episode(episode: int, metrics: dict[str, Any]) -> Any:
            return hook(trainer, {**metrics, INITIAL_VAL_KEY: initial})

        callback = per_episode

    return MetaTrainOutcome(trainer.run(callback), initial)


def write_outputs(result: MetaTrainResult, cfg: MetaTrainConfig, outdir: str | Path) -> dict[str, Path]:
    """Write ``teacher.pt`` (best weights, a teachers.checkpoint file) and ``history.json``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    teacher_path = out / TEACHER_FILE
    result.save(teacher_path, meta={"config": cfg.to_dict()})
    hist = write_json(
        out / HISTORY_FILE,
        {
            "config": cfg.to_dict(),
            "best_val_loss": result.best_val_loss,
            "best_episode": result.best_episode,
            "episodes": result.episodes,
            "meta_iterations": result.meta_iterations,
            "elapsed_s": result.elapsed_s,
            "stop_reason": result.stop_reason,
            "history": result.history,
        },
        indent=1,
    )
    return {TEACHER_FILE: teacher_path, HISTORY_FILE: hist}
