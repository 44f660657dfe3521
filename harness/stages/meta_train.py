"""The meta_train stage: meta-train one teacher on one optimizee distribution from one seed.

A thin, pure wrapper over ``teachers.meta_train`` that turns stage config dicts into a
``MetaTrainConfig``, supports resuming from a saved trainer state, and writes the stage's artifacts
(the best teacher's checkpoint and the training history).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from teachers.meta_train import MetaTrainConfig, MetaTrainer, MetaTrainResult

#: MetaTrainConfig fields a stage's ``settings`` may set (teacher/optimizee/seed come from the grid)
SETTINGS_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(MetaTrainConfig)
    if f.name not in ("teacher", "teacher_kwargs", "optimizee", "optimizee_kwargs", "seed")
)


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse unknown or invalid meta-training settings with a message naming them."""
    bad = sorted(set(settings) - set(SETTINGS_FIELDS))
    if bad:
        raise ValueError(
            f"unknown meta-training setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS_FIELDS)}"
        )
    make_config({"name": "rp"}, {"name": "quadratic_cos"}, 0, settings)


def make_config(
    teacher: Mapping[str, Any], optimizee: Mapping[str, Any], seed: int, settings: Mapping[str, Any]
) -> MetaTrainConfig:
    """A ``MetaTrainConfig`` from a stage's teacher spec, optimizee spec, seed and settings."""
    return MetaTrainConfig(
        teacher=teacher["name"],
        teacher_kwargs=dict(teacher.get("kwargs", {})),
        optimizee=optimizee["name"],
        optimizee_kwargs=dict(optimizee.get("kwargs", {})),
        seed=int(seed),
        **dict(settings),
    )


def run_meta_train(
    cfg: MetaTrainConfig,
    *,
    resume: Mapping[str, Any] | None = None,
    on_episode: Callable[[MetaTrainer, dict[str, Any]], Any] | None = None,
) -> MetaTrainResult:
    """Run (or continue from ``resume``, a ``MetaTrainer.state_dict()``) one meta-training.

    ``on_episode(trainer, metrics)`` is called after each episode (progress, checkpoints); a truthy
    return value stops the run early.
    """
    trainer = MetaTrainer(cfg)
    if resume is not None:
        trainer.load_state_dict(resume)
    callback = None
    if on_episode is not None:

        def callback(episode: int, metrics: dict[str, Any]) -> Any:
            return on_episode(trainer, metrics)

    return trainer.run(callback)


def write_outputs(result: MetaTrainResult, cfg: MetaTrainConfig, outdir: str | Path) -> dict[str, Path]:
    """Write ``teacher.pt`` (best weights, a teachers.checkpoint file) and ``history.json``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    teacher_path = out / "teacher.pt"
    result.save(teacher_path, meta={"config": cfg.to_dict()})
    hist = out / "history.json"

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    hist.write_text(
        json.dumps(
            {
                "config": cfg.to_dict(),
                "best_val_loss": clean(result.best_val_loss),
                "best_episode": result.best_episode,
                "episodes": result.episodes,
                "meta_iterations": result.meta_iterations,
                "elapsed_s": result.elapsed_s,
                "stop_reason": result.stop_reason,
                "history": [{k: clean(v) for k, v in h.items()} for h in result.history],
            },
            indent=1,
        )
    )
    return {"teacher.pt": teacher_path, "history.json": hist}
