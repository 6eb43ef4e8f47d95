"""Small helpers for tests that talk to the control plane as a user would."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from flywheel.api.common import GROUP, VERSION
from flywheel.api.kinds import BY_KIND

# The operator under test resyncs this often, so reference and hot-loop checks
# take seconds.
RESYNC_SECONDS = 2


# Verbs that change something; the apiserver counts a server-side apply as APPLY.
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")


def apiserver_requests(control_plane) -> Counter:
    """apiserver_request_total summed by (resource, subresource, verb) since the
    apiserver last started."""
    text = control_plane.kubectl("get", "--raw", "/metrics").stdout
    totals: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        key = (labels.get("resource"), labels.get("subresource", ""), labels.get("verb"))
        totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def writes(counts: Counter, resource: str, verbs=WRITE_VERBS) -> float:
    return sum(n for (res, _, verb), n in counts.items() if res == resource and verb in verbs)


def wait_for(
    probe: Callable[[], Any],
    timeout: float = 30,
    every: float = 0.3,
    what: str | Callable[[], str] = "",
):
    """Poll until probe() returns something truthy; return it, or fail naming
    `what` (a callable is asked at the failure: it can say what was seen)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    named = what() if callable(what) else what
    pytest.fail(f"timed out after {timeout}s waiting for {named or probe}; last value: {last!r}")


@dataclass
class Objects:
    """Create and read Flywheel objects as a user would, through the API."""

    api: client.CustomObjectsApi

    def create(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind = BY_KIND[obj["kind"]]
        body = {"apiVersion": f"{GROUP}/{VERSION}", **obj}
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, kind.plural, body
        )

    def get(self, namespace: str, kind: str, name: str) -> dict[str, Any]:
        plural = BY_KIND[kind].plural
        return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

    def patch(self, namespace: str, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        plural = BY_KIND[kind].plural
        return self.api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, body
        )

    def condition(self, namespace: str, kind: str, name: str, type_: str) -> dict | None:
        status = self.get(namespace, kind, name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
