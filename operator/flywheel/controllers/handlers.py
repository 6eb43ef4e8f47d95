"""Registers one level-based reconcile per kind with kopf.

Create, update, resume and a resync timer all call the same function, which
compares the object with what it should be; see reconcile.py.

kopf puts its finalizer on every object that has a timer, so that it can stop
the timer before the object goes; the operator removes it on deletion. An
object deleted while no operator runs keeps it until someone removes
`mlops.flywheel.dev/finalizer` (see the README)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.kinds import Kind
from ..config import RESYNC_SECONDS
from .reconcile import forget_object


def register(kind: Kind, handler: Callable[..., Any]) -> None:
    resource = (GROUP, VERSION, kind.plural)
    kopf.on.resume(*resource)(handler)
    kopf.on.create(*resource)(handler)
    kopf.on.update(*resource)(handler)
    kopf.timer(*resource, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)(handler)

    @kopf.on.delete(*resource, optional=True)
    def forget(name: str, namespace: str, uid: str, **_: Any) -> None:
        forget_object(kind.kind, namespace, name, uid)
