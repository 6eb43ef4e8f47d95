"""Conditions, the cert-manager way: a transition time that moves only when the
status flips, one entry per type, and nothing rewritten when nothing changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .stamps import now_stamp

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: str
    reason: str
    message: str


def merge_conditions(
    current: list[dict[str, Any]] | None,
    updates: list[ConditionUpdate],
    generation: int | None,
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """Apply updates to a list of wire-format conditions and return the new list.

    lastTransitionTime is kept from the old entry unless status changed, so a
    person reading `kubectl describe` sees when things last *changed*."""
    stamp = timestamp or now_stamp()
    by_type = {c["type"]: dict(c) for c in current or []}
    for update in updates:
        old = by_type.get(update.type)
        moved = old is None or old.get("status") != update.status
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": stamp if moved else old.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        }
    return sorted(by_type.values(), key=lambda c: _ORDER.get(c["type"], 99))


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


# Ready first, as people look for it first.
_ORDER = {"Ready": 0, "Accepted": 1}
