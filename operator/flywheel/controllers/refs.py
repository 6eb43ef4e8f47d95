"""Reference checks shared by the kinds: a missing object is named with the
field that refers to it and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

from ..api.conditions import FALSE, ConditionUpdate
from .reconcile import ACCEPTED, READY, Assessment


@dataclass(frozen=True)
class Missing:
    field: str
    kind: str
    name: str


def missing_reference(missing: Missing, namespace: str) -> Assessment:
    reason = f"{missing.kind}NotFound"
    message = (
        f"{missing.field}: {missing.kind} {missing.name!r} does not exist in namespace "
        f"{namespace!r}; create it or correct the name"
    )
    return Assessment(
        phase="Pending",
        conditions=[
            ConditionUpdate(ACCEPTED, FALSE, reason, message),
            # Ready carries the fix too: it is the condition people (and
            # ArgoCD's health message) read first.
            ConditionUpdate(READY, FALSE, reason, message),
        ],
    )
