"""The Ray Tune callback that records each trial as an MLflow run, without ever waiting on MLflow."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.stages.outputs import ARTIFACTS_DIR, STATUS_STOPPED, TAG, CostKey, ResultKey, stopped_early
from harness.tracking.delivery.queue import TrackingWriter, writer_for
from harness.tracking.runs import finite_metrics


def _trial_field(config: Mapping[str, Any], name: str) -> Any:
    """Field ``name`` of the trial model in a Tune config (``config["trial"]``, a model or its dict)."""
    trial = config.get("trial")
    return trial.get(name) if isinstance(trial, Mapping) else getattr(trial, name, None)


def _in_ray_worker() -> bool:
    """True in a Ray worker process (a remote task or actor), False in a driver."""
    import ray

    try:
        return bool(ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)
    except Exception:  # noqa: BLE001 - no Ray context: not a worker
        return False


def _tune_callback_base() -> type:
    from ray.tune import Callback

    return Callback


class TrialTracker(_tune_callback_base()):  # type: ignore[misc]
    """Ray Tune callback: one MLflow child run per trial under the stage run, exactly once.

    The callback never calls MLflow: each event becomes a write queued for the background writer
    (:mod:`harness.tracking.delivery.queue`), naming the trial attempt by a fresh handle, so Tune's loop
    never waits on tracking.

    A trial is identified by its ``sl2o.trial_key`` tag, not Tune's trial id: a key that already has a
    FINISHED run is not recorded again, and an unfinished run of the key (a killed, errored or retried
    attempt) is replaced by the new attempt's run, so a rerun leaves one record per trial.

    Results carry the keys of :class:`harness.stages.outputs.ResultKey`: curves (logged as metric histories),
    and on the last one the final metrics, ``status`` and ``info`` (tags); the final checkpoint's
    ``artifacts/`` become the run's artifacts, and SR datasets its dataset inputs. A trial that early stopping
    ended (its last result ``done`` without the final report) is tagged ``sl2o.status = stopped`` with its
    ``stopped_at_step``, interim values and cost so far; its run then finishes, so a rerun does not train it
    again.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        base_tags: dict[str, str],
        trial_tags: Callable[[dict[str, Any]], dict[str, str]],
        trial_params: Callable[[dict[str, Any]], dict[str, str]],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.base_tags = base_tags
        self.trial_tags = trial_tags
        self.trial_params = trial_params
        #: Tune's trial id -> (the current attempt's handle, its trial key, its label)
        self._attempts: dict[str, tuple[str, str, str]] = {}

    @property
    def writer(self) -> TrackingWriter:
        return writer_for(self.tracking_uri)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        state = dict(self.__dict__)
        state["_attempts"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # state pickled by an earlier version held a client and run ids instead of attempts
        state = {k: v for k, v in state.items() if k not in ("_client", "_runs")}
        self.__dict__.update(state)
        self.__dict__.setdefault("_attempts", {})

    def _submit(self, attempt: tuple[str, str, str], kind: str, **fields: Any) -> None:
        handle, key, label = attempt
        op = {"kind": kind, "handle": handle, "trial_key": key, "label": label}
        self.writer.submit({**op, "experiment_id": self.experiment_id, **fields})

    def _attempt(self, trial: Any) -> tuple[str, str, str]:
        """The current attempt of ``trial``; its first event queues the creation of its run."""
        known = self._attempts.get(trial.trial_id)
        if known is not None:
            return known
        tags = dict(self.base_tags)
        tags.update(self.trial_tags(trial.config))
        tags[f"{TAG}.kind"] = "trial"
        tags[f"{TAG}.trial_id"] = trial.trial_id
        tags[f"{TAG}.status"] = "running"
        label = tags.get(f"{TAG}.label") or str(trial)
        attempt = (uuid.uuid4().hex[:16], tags[f"{TAG}.trial_key"], label)
        self._attempts[trial.trial_id] = attempt
        dataset = _trial_field(trial.config, "dataset")
        self._submit(
            attempt,
            "start",
            parent_run_id=self.parent_run_id,
            name=tags.get(f"{TAG}.stage", "trial") + " " + label,
            tags=tags,
            params=self.trial_params(trial.config),
            dataset=dataset if isinstance(dataset, str) and dataset.endswith(".npz") else None,
        )
        return attempt

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Under Ray Client, Tune's loop (and this callback) runs in a Ray worker on the cluster, not in the
        driver, whose client could not wait for this process's queue: deliver it before ``fit`` returns."""
        if _in_ray_worker():
            self.writer.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attempt(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune retries a failed trial: its new attempt gets a new run, the failed one is removed."""
        attempt = self._attempts.pop(trial.trial_id, None)
        if attempt is not None:
            self._submit(attempt, "discard")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        attempt = self._attempt(trial)
        metrics: list[tuple[str, float, int, int]] = []
        steps = result.get(ResultKey.CURVE_STEPS)
        now = int(time.time() * 1000)
        if steps:
            for key, values in result.items():
                if (
                    key.startswith(ResultKey.CURVE_PREFIX)
                    and key != ResultKey.CURVE_STEPS
                    and isinstance(values, list)
                ):
                    name = key[len(ResultKey.CURVE_PREFIX) :]
                    metrics.extend(
                        (name, float(v), now, int(s))
                        for s, v in zip(steps, values, strict=False)
                        if isinstance(v, int | float) and math.isfinite(float(v))
                    )
        tags = {}
        if result.get(ResultKey.FINAL):
            keep = {k: v for k, v in result.items() if k in result.get(ResultKey.FINAL_KEYS, ())}
            metrics.extend((m.key, m.value, m.timestamp, m.step) for m in finite_metrics(keep))
            tags[f"{TAG}.status"] = str(result.get(ResultKey.STATUS, "ok"))
            for k, v in (result.get(ResultKey.INFO) or {}).items():
                tags[f"{TAG}.{k}"] = str(v)[:5000]
        elif stopped_early(result) and ResultKey.STEP in result:
            # early stopping ended the trial here (Tune marks the result done; no final report follows): the
            # run finishes as "stopped", with the step and the interim values it was judged by
            step = result[ResultKey.STEP]
            tags[f"{TAG}.status"] = STATUS_STOPPED
            interim = {k: result[k] for k in result.get(ResultKey.INTERIM_KEYS, ()) if k in result}
            spent = {k: result[k] for k in (CostKey.WALL, CostKey.CPU, CostKey.GPU, CostKey.START) if k in result}
            if isinstance(result.get(CostKey.NODE), str):
                tags[f"{TAG}.{CostKey.NODE}"] = result[CostKey.NODE]
            keep = {ResultKey.STOPPED_AT: step, **interim, **spent}
            metrics.extend((m.key, m.value, m.timestamp, int(step)) for m in finite_metrics(keep))
        if metrics or tags:
            self._submit(attempt, "log", metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        attempt = self._attempt(trial)
        artifacts, copied = None, False
        ckpt = trial.checkpoint
        if ckpt is not None and ckpt.path and os.path.isdir(os.path.join(ckpt.path, ARTIFACTS_DIR)):
            src = os.path.join(ckpt.path, ARTIFACTS_DIR)
            artifacts = self.writer.snapshot(src, attempt[0])
            copied = artifacts != src
        self._submit(attempt, "complete", artifacts=artifacts, snapshot=copied)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        attempt = self._attempt(trial)
        err = ""
        if trial.error_file and os.path.exists(trial.error_file):
            err = Path(trial.error_file).read_text()[-4000:]
        tags = {f"{TAG}.status": "error", f"{TAG}.error": err or "unknown error"}
        self._submit(attempt, "error", tags=tags)
