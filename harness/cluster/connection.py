"""Connecting to Ray: local Ray, a cluster address (``host:port`` or ``auto``) or Ray Client (``ray://host:10001``).

An explicit address is probed first with one gRPC call (Ray's own channel, which carries the auth token when
``RAY_AUTH_MODE=token``), so a refused token or an unreachable head is one :class:`ClusterError` line at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import ray

#: how long a connection probe may take
PROBE_TIMEOUT_S = 5.0


class ClusterError(ValueError):
    """A cluster cannot be used as asked (connection, auth, storage, GPUs): one line saying what to do."""


def is_client_address(address: str | None) -> bool:
    return bool(address) and str(address).startswith("ray://")


def client_mode() -> bool:
    """Whether this process talks to Ray through Ray Client (Tune then runs ``fit`` on the head)."""
    from ray.util.client import ray as client_ray

    return bool(client_ray.is_connected())


def auth_hint(address: str) -> str:
    """The one line to say when ``address`` refuses this process's token."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode.lower() != "token":
        return (
            f"the Ray cluster at {address} requires token authentication (InvalidAuthToken): set "
            "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN=<token>, or the head node's "
            "~/.ray/auth_token copied here or named by RAY_AUTH_TOKEN_PATH)"
        )
    return (
        f"the Ray cluster at {address} refused this machine's token (InvalidAuthToken): RAY_AUTH_MODE=token "
        "is set, but the token differs from the cluster's; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to "
        "the head node's ~/.ray/auth_token"
    )


def _grpc_code_name(err: BaseException) -> str:
    code: Any = getattr(err, "code", None)
    try:
        return str(getattr(code(), "name", "")) if callable(code) else ""
    except Exception:  # noqa: BLE001 - not a grpc.RpcError after all
        return ""


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One authenticated gRPC call to a GCS (``host:port``) or a Ray Client server (``ray://host:port``).

    Raises :class:`ClusterError` when the token is refused or nothing answers; returns quietly when the
    call succeeds or when the probe itself cannot be made (then ``ray.init`` reports what is wrong).
    """
    try:
        import grpc
        from ray._private.grpc_utils import init_grpc_channel
    except ImportError:
        return
    target = address[len("ray://") :] if is_client_address(address) else address
    channel = init_grpc_channel(target, asynchronous=False)
    try:
        if is_client_address(address):
            from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

            pb: Any = ray_client_pb2
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=timeout
            )
        else:
            from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

            gcs: Any = gcs_service_pb2
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs.GetClusterIdRequest(), timeout=timeout
            )
    except grpc.RpcError as err:
        code = _grpc_code_name(err)
        details = str(getattr(err, "details", lambda: "")() or "")
        if code == "UNAUTHENTICATED" or "InvalidAuthToken" in details:
            raise ClusterError(auth_hint(address)) from None
        if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            what = "Ray Client server" if is_client_address(address) else "Ray cluster (GCS)"
            raise ClusterError(
                f"no {what} answers at {address} within {timeout:.0f}s ({code.lower()}); check the address "
                "and port (a cluster: the head's --port, default 6379; Ray Client: ray://head:10001) and "
                "that this machine can reach it"
            ) from None
    finally:
        channel.close()


def is_auth_error(err: BaseException) -> bool:
    """Whether ``err`` or an exception in its chain is Ray's refusal of this process's auth token."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def connect(address: str | None, init: Callable[..., Any] | None = None) -> None:
    """``ray.init`` for a local Ray (no address) or a cluster, failing in one line (:class:`ClusterError`)."""
    init = init or ray.init
    if not address:
        init()
        return
    if address != "auto":
        probe(address)
    tries = 2 if is_client_address(address) else 1
    for attempt in range(tries):
        try:
            init(address=address, log_to_driver=False)
            return
        except Exception as err:  # noqa: BLE001 - turned into one line below
            if is_auth_error(err):
                raise ClusterError(auth_hint(address)) from None
            # Ray Client's per-client server can die while it is forked on the head (ray-project/ray#63202)
            if attempt + 1 < tries and "Starting Ray client server failed" in str(err):
                time.sleep(1.0)
                continue
            first = " ".join(str(err).split())[:300]
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: {first}") from None
