"""MLflow run primitives: create runs, log in batches, page through searches, find and close our runs.

Every function takes the client to use (an ``MlflowClient`` or the driver's outage-proof client from
:func:`harness.tracking.init_tracking`); nothing here keeps state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.stages.outputs import TAG


def start_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a run (nested under ``parent_run_id`` when given) and return its id."""
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return run.info.run_id


def finite_metrics(metrics: dict[str, Any]) -> list[Metric]:
    """Numeric, finite values as MLflow metrics (inf/NaN are kept out; ``diverged`` says why)."""
    now = int(time.time() * 1000)
    out = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out.append(Metric(k, float(v), now, 0))
    return out


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """One ``log_batch`` call, split to MLflow's 1000-metric / 100-param limits."""
    metrics = list(metrics)
    plist = [Param(k, v[:6000]) for k, v in (params or {}).items()]
    tlist = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metrics), 1), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000], params=plist[:100], tags=tlist)
        plist, tlist = plist[100:], []
    while plist:
        client.log_batch(run_id, params=plist[:100])
        plist = plist[100:]


def find_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """All runs matching ``filter_string`` (paged)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def our_experiments(client: MlflowClient, suite: str | None = None) -> list[Any]:
    """Experiments created by this harness (optionally only suite ``suite``)."""
    exps = client.search_experiments(filter_string=f"tags.`{TAG}.suite` != ''")
    exps = [e for e in exps if e.tags.get(f"{TAG}.suite")]
    if suite is not None:
        exps = [e for e in exps if e.name == suite]
    return exps


def latest_suite_run(client: MlflowClient, experiment_id: str) -> Any | None:
    """The most recent suite parent run of an experiment."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{TAG}.kind` = 'suite'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def completed_stage_run(client: MlflowClient, experiment_id: str, stage_key: str) -> Any | None:
    """A finished stage run with this key (its outputs can be reused), else None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'stage' "
        f"and tags.`{TAG}.complete` = 'true'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def close_orphan_runs(client: MlflowClient, experiment_id: str, keep: str | None = None) -> int:
    """Close suite and stage runs an earlier driver left RUNNING (it was killed); returns how many.

    Their trials are resumed by the stage that reruns; this only ends the stale bookkeeping runs.
    """
    stale = [
        r
        for kind in ("suite", "stage")
        for r in find_runs(
            client, [experiment_id], f"tags.`{TAG}.kind` = '{kind}' and attributes.status = 'RUNNING'"
        )
    ]
    n = 0
    for r in stale:
        if r.info.run_id != keep:
            client.set_terminated(r.info.run_id, status="KILLED")
            n += 1
    return n


def close_stale_trial_runs(client: MlflowClient, experiment_id: str, stage_key: str) -> int:
    """Mark trial runs left RUNNING by an interrupted driver as KILLED; returns how many."""
    stale = find_runs(
        client,
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'trial' "
        "and attributes.status = 'RUNNING'",
    )
    for r in stale:
        client.set_terminated(r.info.run_id, status="KILLED")
    return len(stale)


def finished_trial_keys(client: MlflowClient, experiment_id: str, stage_key: str) -> set[str]:
    """``sl2o.trial_key`` of every trial of a stage key that has a FINISHED run (recorded, done)."""
    runs = find_runs(
        client,
        [experiment_id],
        f"tags.`{TAG}.stage_key` = '{stage_key}' and tags.`{TAG}.kind` = 'trial' "
        "and attributes.status = 'FINISHED'",
    )
    return {k for r in runs if (k := r.data.tags.get(f"{TAG}.trial_key"))}
