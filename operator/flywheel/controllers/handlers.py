"""Registers one level-based reconcile per kind with kopf.

Create, update, resume and the resync (resync.py) all call the same
function, which compares the object with what it should be; see
reconcile.py.

No kopf.timer, so kopf puts no finalizer on the objects: deleting one never
waits for the operator (a ModelVersion whose deletionPolicy is Delete is the
exception: its registry version goes first, see modelversions.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.kinds import Kind
from ..config import RESYNC_SECONDS
from ..integrations.kube import POOL_CONNECTIONS
from .reconcile import forget_object
from .resync import Resync

# A quarter of the handler threads at most: the resync must not keep
# creates, edits and wake-ups waiting.
RESYNC = Resync(RESYNC_SECONDS, concurrency=max(1, POOL_CONNECTIONS // 4))


def register(kind: Kind, handler: Callable[..., Any]) -> None:
    resource = (GROUP, VERSION, kind.plural)
    kopf.on.resume(*resource)(handler)
    kopf.on.create(*resource)(handler)
    kopf.on.update(*resource)(handler)

    # A coroutine: kopf runs it on its event loop at once, on every watch
    # event, and it only notes the body (resync.py).
    @kopf.on.event(*resource, id=f"resync_{kind.plural}")
    async def schedule(event, body, namespace: str, name: str, uid: str, **kwargs: Any) -> None:
        if RESYNC.on_event(kind, handler, event, body, namespace, name, kwargs):  # gone or going
            forget_object(kind.kind, namespace, name, uid)


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    await RESYNC.stop()
