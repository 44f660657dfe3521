"""The tracking write queue: trial writes delivered to MLflow by a background thread, never blocking Tune.

``queue`` (:class:`TrackingWriter`, one queue and delivery thread per tracking URI), ``spool`` (the on-disk
journal that keeps undelivered writes across an outage or a driver's exit) and ``ops`` (the idempotent ops the
thread executes, and which failures are transient).
"""

from harness.tracking.delivery.ops import is_transient
from harness.tracking.delivery.queue import TrackingWriter, close_all, writer_for

__all__ = ["TrackingWriter", "close_all", "is_transient", "writer_for"]
