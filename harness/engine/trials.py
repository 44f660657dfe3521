"""How one stage's trials look to Ray Tune and MLflow: stable keys, tags, params, labels, folders, resources.

The callables here are picklable (Tune saves them with its callbacks and restores them with the experiment).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from harness import cluster
from harness.config.suite import Resources
from harness.jsonio import flatten_params
from harness.stages.base import StageKind
from harness.stages.outputs import TAG

#: the trial keys a Tune experiment was created with, in its folder (a restore needs the same list)
TRIALS_FILE = "sl2o-trials.json"


def trial_resources(
    res: Resources, stage: str = "?", allow_cpu_fallback: bool = False, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Per-trial resources. GPUs are asked only where the cluster has them or its autoscaler can add
    them (a request nothing can meet waits forever); otherwise an error, or CPUs with the fallback."""
    gpus = cluster.gpu_request(res, stage, allow_cpu_fallback, log)
    return {"cpu": float(res.cpus_per_trial), "gpu": float(gpus)}


def trial_key(stage_key: str, trial: BaseModel) -> str:
    """A trial's stable identity: its stage's key and its whole resolved config."""
    blob = json.dumps(trial.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(f"{stage_key}\n{blob}".encode()).hexdigest()[:20]


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: its id (the default folder name repeats the config, here an object)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _label(short_tags: dict[str, str]) -> str:
    return " · ".join(v for k, v in short_tags.items() if k != "optimizer_family")


class TrialTags:
    """``trial config -> MLflow tags`` for a stage kind."""

    def __init__(self, kind: StageKind[Any, Any], stage_key: str) -> None:
        self.kind = kind
        self.stage_key = stage_key

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        trial = config["trial"]
        short = self.kind.trial_tags(trial)
        tags = {f"{TAG}.{k}": str(v) for k, v in short.items()}
        tags[f"{TAG}.trial_key"] = trial_key(self.stage_key, trial)
        identity = trial.model_dump(mode="json", include=set(self.kind.identity) or None)
        tags[f"{TAG}.config"] = json.dumps(identity, sort_keys=True, default=str)
        # a readable run name: the trial's short facts (``sgd(lr=0.1) · quadratic_cos · 0``)
        tags[f"{TAG}.label"] = _label(short)
        return tags


class TrialLabel:
    """``trial config -> short label`` (its tags' values) for progress lines and run names."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> str:
        if "trial" not in config:
            return "?"
        return _label(self.kind.trial_tags(config["trial"]))


class TrialParams:
    """``trial config -> MLflow params`` for a stage kind."""

    def __init__(self, kind: StageKind[Any, Any]) -> None:
        self.kind = kind

    def __call__(self, config: dict[str, Any]) -> dict[str, str]:
        return flatten_params(self.kind.trial_params(config["trial"]))
