"""Leaderboard queries: the evaluate and distill results of each suite's latest run, one per trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from harness.config.specs import horizon_label, task_label
from harness.registry import STAGES
from harness.stages.outputs import TAG
from harness.tracking.runs import completed_stage_run, find_runs, latest_suite_run, our_experiments


def _one_per_trial(runs: list[Any]) -> tuple[list[Any], int]:
    """One run per trial identity (``sl2o.trial_key``, else stage key + config): a finished run before a
    failed one, then the latest. Stores written before trial keys existed may hold doubles."""
    best: dict[str, Any] = {}
    duplicates = 0
    for r in runs:
        t = r.data.tags
        ident = (
            t.get(f"{TAG}.trial_key")
            or f"{t.get(f'{TAG}.stage_key')}:{t.get(f'{TAG}.config', r.info.run_id)}"
        )
        rank = (r.info.status == "FINISHED", r.info.end_time or 0)
        if ident in best:
            duplicates += 1
            other = best[ident]
            if rank <= (other.info.status == "FINISHED", other.info.end_time or 0):
                continue
        best[ident] = r
    return list(best.values()), duplicates


def trial_horizon(tags: dict[str, str]) -> str:
    """An evaluate trial's horizon label (``300 steps``; empty for the optimizee's default budget): its
    ``sl2o.horizon`` tag, else read from its ``sl2o.config`` (runs recorded before the tag existed)."""
    if f"{TAG}.horizon" in tags:
        return tags[f"{TAG}.horizon"]
    try:
        optimizee = json.loads(tags.get(f"{TAG}.config") or "{}").get("optimizee") or {}
        return horizon_label(optimizee.get("steps"), optimizee.get("epochs"))
    except (ValueError, TypeError, AttributeError):
        return ""


def leaderboard_records(
    client: MlflowClient,
    suite: str | None = None,
    optimizee: str | None = None,
    stats: dict[str, int] | None = None,
    curves: bool = False,
    histories: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Evaluate-trial runs (finished, and errored with ``status: error``) of each suite's latest run, one
    per trial, as flat records for ``report``; ``stats["duplicates"]`` counts the doubles left out. With
    ``curves``, each record also holds its ``train_loss`` curve as ``[(step, value), ...]``; with
    ``histories``, its ``histories`` maps each metric named there to its history alike (e.g.
    ``train_loss_mean``, for the loss at equal cost). Each record's ``horizon`` is its :func:`trial_horizon`; ``optimizee`` filters by the optimizee's label or its task
    label (``mlp · 300 steps``), or a prefix of either.

    Only the stage keys of the most recent suite run count, so an edited and rerun suite does not
    mix old and new results.
    """
    duplicates = 0
    records: list[dict[str, Any]] = []
    for exp in our_experiments(client, suite):
        latest = latest_suite_run(client, exp.experiment_id)
        if latest is None:
            continue
        keys = [k for k in latest.data.tags.get(f"{TAG}.stage_keys", "").split(",") if k]
        metric = latest.data.tags.get(f"{TAG}.metric", "final_train_loss")
        mode = latest.data.tags.get(f"{TAG}.mode", "min")
        for key in keys:
            runs = [
                r
                for kind in leaderboard_kinds()
                for r in find_runs(
                    client,
                    [exp.experiment_id],
                    f"tags.`{TAG}.stage_key` = '{key}' and tags.`{TAG}.kind` = 'trial' "
                    f"and tags.`{TAG}.stage_kind` = '{kind}'",
                )
            ]
            runs = [r for r in runs if r.info.status in ("FINISHED", "FAILED")]
            unique, doubles = _one_per_trial(runs)
            duplicates += doubles
            for r in unique:
                t = r.data.tags
                horizon = trial_horizon(t)
                task = task_label(t.get(f"{TAG}.optimizee", ""), horizon)
                if optimizee is not None and not (
                    t.get(f"{TAG}.optimizee", "").startswith(optimizee) or task.startswith(optimizee)
                ):
                    continue
                records.append(
                    {
                        "suite": exp.name,
                        "stage": t.get(f"{TAG}.stage"),
                        "optimizee": t.get(f"{TAG}.optimizee"),
                        "horizon": horizon,
                        "optimizer": t.get(f"{TAG}.optimizer"),
                        "family": t.get(f"{TAG}.optimizer_family"),
                        "seed": t.get(f"{TAG}.seed"),
                        "status": "error" if r.info.status == "FAILED" else t.get(f"{TAG}.status", "ok"),
                        "trial_key": t.get(f"{TAG}.trial_key")
                        or f"{key}:{t.get(f'{TAG}.config', r.info.run_id)}",
                        "metric": metric,
                        "mode": mode,
                        "metrics": dict(r.data.metrics),
                        "run_id": r.info.run_id,
                    }
                )
                if curves:
                    history = client.get_metric_history(r.info.run_id, "train_loss")
                    records[-1]["curve"] = sorted((int(m.step), float(m.value)) for m in history)
                if histories:
                    records[-1]["histories"] = {
                        name: sorted(
                            (int(m.step), float(m.value))
                            for m in client.get_metric_history(r.info.run_id, name)
                        )
                        for name in histories
                    }
    if stats is not None:
        stats["duplicates"] = duplicates
    return records


def leaderboard_kinds() -> list[str]:
    """The stage kinds whose trials are leaderboard rows (their ``leaderboard`` flag)."""
    return [name for name, kind in STAGES.items() if kind.leaderboard]


def distill_records(client: MlflowClient, suite: str | None = None) -> list[dict[str, Any]]:
    """Table 3 rows of the stages of each suite's latest run whose kind gives summary rows (the distill
    stage: one row per distilled source, from the stage-level ``chosen.json``/``front.json``)."""
    import tempfile

    rows: list[dict[str, Any]] = []
    for exp in our_experiments(client, suite):
        latest = latest_suite_run(client, exp.experiment_id)
        if latest is None:
            continue
        for key in [k for k in latest.data.tags.get(f"{TAG}.stage_keys", "").split(",") if k]:
            run = completed_stage_run(client, exp.experiment_id, key)
            kind_name = run.data.tags.get(f"{TAG}.stage_kind", "") if run is not None else ""
            if run is None or kind_name not in STAGES or not STAGES.get(kind_name).summary_table:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                client.download_artifacts(run.info.run_id, "", tmp)
                found = STAGES.get(kind_name).summary_rows(Path(tmp), run.data.tags.get(f"{TAG}.stage", ""))
            rows.extend({"suite": exp.name, **r} for r in found or [])
    return rows
