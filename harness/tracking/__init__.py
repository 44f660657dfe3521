"""MLflow tracking: the store, suite/stage/trial runs, and the queries the leaderboard and report read.

Trials never talk to MLflow: a Tune callback in the driver (:class:`TrialTracker`) records one child run per
trial through a write queue (``delivery/``) that waits out tracking outages and journals on disk what it could
not deliver yet, so a tracking outage loses nothing and blocks nothing.
"""

from __future__ import annotations

from harness.tracking.client import ResilientClient
from harness.tracking.datasets import sr_dataset_input
from harness.tracking.delivery.queue import close_all, writer_for
from harness.tracking.queries import distill_records, leaderboard_records, trial_horizon
from harness.tracking.runs import (
    close_orphan_runs,
    close_stale_trial_runs,
    completed_stage_run,
    find_runs,
    finished_trial_keys,
    finite_metrics,
    latest_suite_run,
    log_batch,
    our_experiments,
    start_run,
)
from harness.tracking.store import (
    DEFAULT_DB,
    StoreError,
    artifact_root_for,
    check_sqlite_store,
    default_tracking_uri,
    ensure_experiment,
    init_tracking,
    read_only_store,
    resolve_tracking_uri,
)
from harness.tracking.trials import TrialTracker

__all__ = [
    "DEFAULT_DB",
    "ResilientClient",
    "TrialTracker",
    "artifact_root_for",
    "close_all",
    "close_orphan_runs",
    "close_stale_trial_runs",
    "completed_stage_run",
    "default_tracking_uri",
    "distill_records",
    "ensure_experiment",
    "find_runs",
    "finished_trial_keys",
    "finite_metrics",
    "init_tracking",
    "latest_suite_run",
    "leaderboard_records",
    "log_batch",
    "our_experiments",
    "read_only_store",
    "resolve_tracking_uri",
    "sr_dataset_input",
    "StoreError",
    "check_sqlite_store",
    "start_run",
    "trial_horizon",
    "writer_for",
]
