"""Ray cluster glue: connecting (:mod:`.connection`), cluster resources and GPU requests (:mod:`.resources`),
the workdir as Ray Tune storage (:mod:`.storage`), trial input files on a URI workdir (:mod:`.inputs`), and
progress lines through Ray Client (:mod:`.client`).

This package sits below ``harness.engine`` and never imports it.
"""

from harness.cluster.client import ClientLog, fit_streaming
from harness.cluster.connection import ClusterError, auth_hint, client_mode, connect, is_auth_error, probe
from harness.cluster.inputs import localize_inputs, stage_inputs
from harness.cluster.resources import gpu_request
from harness.cluster.storage import Storage, check_storage

__all__ = [
    "ClientLog",
    "ClusterError",
    "Storage",
    "auth_hint",
    "check_storage",
    "client_mode",
    "connect",
    "fit_streaming",
    "gpu_request",
    "is_auth_error",
    "localize_inputs",
    "probe",
    "stage_inputs",
]
