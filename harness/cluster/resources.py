"""What the Ray cluster has: its alive nodes, its autoscaler's limits, and the GPUs a trial may ask for.

A GPU request on a cluster without GPUs is an error, unless the user allows the CPU fallback or the
cluster's autoscaler can add GPU nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ray

from harness.cluster.connection import ClusterError, client_mode
from harness.config.suite import Resources

#: how long a task asked of the cluster (the autoscaler question, the per-node workdir check) may take
CHECK_TIMEOUT_S = 60.0


@dataclass
class NodeInfo:
    node_id: str
    ip: str
    resources: dict[str, float]


def alive_nodes() -> list[NodeInfo]:
    """The cluster's alive nodes (``ray.nodes()``), those that can run tasks (any CPU or GPU)."""
    out = []
    for n in ray.nodes():
        res = dict(n.get("Resources") or {})
        if n.get("Alive") and (res.get("CPU", 0) > 0 or res.get("GPU", 0) > 0):
            out.append(NodeInfo(n["NodeID"], str(n.get("NodeManagerAddress", "?")), res))
    return out


def _autoscaler_max_resources() -> dict[str, float] | None:
    """What the cluster's autoscaler config could grow to (``None``: no autoscaler config)."""
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
        return None if found is None else {k: float(v) for k, v in found.items()}
    except Exception:  # noqa: BLE001 - an older Ray or no autoscaler
        return None


def autoscaler_max_resources() -> dict[str, float] | None:
    """The autoscaler's maximum resources, asked on the cluster (works through Ray Client too)."""
    if not client_mode():
        return _autoscaler_max_resources()
    task = ray.remote(num_cpus=0)(_autoscaler_max_resources)
    return ray.get(task.remote(), timeout=CHECK_TIMEOUT_S)


def gpu_request(
    res: Resources,
    stage: str,
    allow_cpu_fallback: bool,
    log: Callable[[str], None] = print,
    cluster_gpus: float | None = None,
    max_resources: Callable[[], dict[str, float] | None] = autoscaler_max_resources,
) -> float:
    """The GPUs to ask per trial: ``res.gpus_per_trial`` if the cluster has (or can add) GPUs.

    Without GPUs: 0 with ``allow_cpu_fallback`` (said once in the log), else :class:`ClusterError`.
    """
    want = float(res.gpus_per_trial)
    if want <= 0:
        return 0.0
    have = float(ray.cluster_resources().get("GPU", 0.0)) if cluster_gpus is None else cluster_gpus
    if have >= want:
        return want
    grow = (max_resources() or {}).get("GPU", 0)
    if grow and float(grow) >= want:
        log(f"[{stage}] no GPU node is up yet; the cluster's autoscaler can add GPU nodes (up to {grow:g})")
        return want
    if allow_cpu_fallback:
        log(f"[{stage}] the cluster has {have:g} GPU(s); running on CPUs (--allow-cpu-fallback)")
        return 0.0
    raise ClusterError(
        f"stage {stage!r} asks for {want:g} GPU(s) per trial, but the Ray cluster has {have:g} and no "
        "autoscaler that can add GPU nodes; add GPU nodes, set resources.gpus_per_trial: 0, or pass "
        "--allow-cpu-fallback to run on CPUs"
    )
