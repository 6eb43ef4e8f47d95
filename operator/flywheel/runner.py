"""Starts kopf with the operator's handlers and its metrics endpoint."""

from __future__ import annotations

import contextlib
import ctypes
import logging

import kopf
from prometheus_client import start_http_server

_FORMATS = {
    "json": kopf.LogFormat.JSON,
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
}


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena, up to eight
    per core, and an arena keeps what was freed in it. The handler threads all
    allocate (JSON bodies), so after a burst each arena holds its high-water
    mark. Two arenas: the threads share them (the GIL serialises most of
    their allocations anyway). Must run before the threads start."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)


M_ARENA_MAX = -8  # <malloc.h>


def run_operator(
    namespaces: list[str],
    liveness: str | None,
    metrics_port: int,
    metrics_address: str,
    log_format: str,
    verbose: bool,
) -> None:
    _few_malloc_arenas()
    kopf.configure(verbose=verbose, log_format=_FORMATS[log_format])
    from . import controllers  # (registers the handlers)

    controllers.session.watch_namespaces(namespaces)

    if metrics_port:
        start_http_server(metrics_port, addr=metrics_address)
    logging.getLogger("flywheel").info(
        "starting", extra={"namespaces": namespaces or "all", "metrics_port": metrics_port}
    )
    kopf.run(
        # One replica (the chart's Deployment uses strategy Recreate), so no
        # peering objects are needed in the cluster.
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
