"""Registers one level-based reconcile per kind with kopf.

Create, update, resume and a resync timer all call the same function, which
compares the object with what it should be; see reconcile.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.kinds import Kind
from ..config import RESYNC_SECONDS
from ..metrics import PHASES


def register(kind: Kind, handler: Callable[..., Any]) -> None:
    resource = (GROUP, VERSION, kind.plural)
    kopf.on.resume(*resource)(handler)
    kopf.on.create(*resource)(handler)
    kopf.on.update(*resource)(handler)
    kopf.timer(*resource, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)(handler)

    @kopf.on.event(*resource)
    def forget_deleted(type: str, name: str, namespace: str, **_: Any) -> None:
        # Objects without finalizers vanish without a delete cause; the raw
        # DELETED watch event is the one place to drop them from the metrics.
        if type == "DELETED":
            PHASES.forget(kind.kind, namespace, name)
