"""kopf's HTTP session to the apiserver, with a bounded connection pool.

kopf's own session sets no limit on connections. When a thousand objects
arrive at once, it patches and posts Events for hundreds of them at the same
time, each on a TLS connection of its own: tracemalloc in the scale
benchmark found 494 connection read buffers alive (asyncio gives each TLS
connection 256 KiB), 62 MiB of the operator's Python memory, with OpenSSL's
share on top, and the apiserver paid a handshake for each. With a bound, the
extra requests wait for a free connection instead; the apiserver could not
answer them any sooner.

The bound leaves room for the watch streams, which hold a connection each
while they run: one per watched resource and namespace. With namespace
patterns (`--namespace 'team-*'`) their number is not known in advance, so
the pool stays unbounded, as kopf's own.

Logging in is still kopf's (login_via_client: kubeconfig, in-cluster service
account, exec plugins); only the session it builds from the result differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import kopf

# Requests in flight at once (patches, Events, finalizers).
REQUEST_CONNECTIONS = 32
# The resources kopf watches per namespace: our four kinds, Jobs, Deployments,
# Services, and its own CRD and namespace watches; rounded up.
WATCHES_PER_NAMESPACE = 12

_namespaces: list[str] = []


def watch_namespaces(namespaces: list[str]) -> None:
    """What `flywheel run --namespace` was given (none: cluster-wide)."""
    _namespaces[:] = namespaces


def connection_limit(namespaces: list[str]) -> int:
    """aiohttp's limit for kopf's session; 0 means none."""
    if any(c in ns for ns in namespaces for c in "*?[!"):
        return 0
    return REQUEST_CONNECTIONS + WATCHES_PER_NAMESPACE * max(1, len(namespaces))


@kopf.on.login()
async def login_with_bounded_pool(**kwargs: Any) -> kopf.AiohttpSession | None:
    info = await asyncio.to_thread(lambda: kopf.login_via_client(**kwargs))
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=connection_limit(_namespaces), ssl=info.as_ssl_context()
        ),
        headers=info.as_http_headers(),
        auth=info.as_aiohttp_basic_auth(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
    )
