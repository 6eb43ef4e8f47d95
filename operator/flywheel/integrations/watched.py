"""The operator's children as its watches last saw them.

The operator watches its Jobs, Deployments and Services anyway (to wake their
owners, controllers/wake.py), so a reconcile that only needs to read one of
them by name reads it here instead of asking the apiserver: at 1,000
InferenceServices and 1,000 TrainingRuns, each resync's reads were ~200
requests a second on a quiet cluster (the cache controller-runtime's
informers give Go operators).

What is here is at most a watch event behind the apiserver. A reader that
acts on an older copy does no harm: an apply whose child looks changed is
sent again (a no-op write), and a Job's end or a child's deletion arrives as
an event that wakes the owner after this cache has recorded it. A name not
here (not seen yet) is read from the apiserver, as before, and what the
read finds is kept too, absence included (a missing canary Deployment is
looked for on every resync).

One thing a watch can miss: a deletion while it was disconnected (kopf lists
again when it reconnects, and what is gone from the list sends no event). So
a copy is trusted for MAX_AGE seconds after its last event or read; after
that the next reader reads the apiserver again, which refreshes or drops it.

Copies are kept as compact JSON and decoded for each reader. As Python dicts
and strings a Deployment took ~23 KB and a Job ~20 KB (against ~4 KB of
JSON each), so at 1,000 TrainingRuns and 1,000 InferenceServices the 4,000
children held ~55 MB for as long as the operator ran; as JSON, ~10 MB. A
decode costs ~20 microseconds, against the milliseconds of the read it saves.
Each reader gets its own copy, which it may change.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

# What the watches record: (apiVersion, kind).
KINDS = {("batch/v1", "Job"), ("apps/v1", "Deployment"), ("v1", "Service")}

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

# Ten resyncs: a converged child is read from the apiserver every five
# minutes instead of every 30 s, and a deletion the watch missed is noticed.
MAX_AGE = 300.0


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


# What get() answers when it cannot say (never seen, or too long ago): the
# caller reads the apiserver. None means "seen to be absent".
UNKNOWN: Any = _Unknown()

# key -> (when last seen, the object as compact JSON, or None for "absent").
_objects: dict[Key, tuple[float, str | None]] = {}
_guard = threading.Lock()
_sweep_at = 1024
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode  # compact


def record(api_version: str, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A watch event: the object as it now is, or gone (DELETED)."""
    meta = body.get("metadata") or {}
    key = (api_version, kind, meta.get("namespace", ""), meta.get("name", ""))
    remember(key, None if event_type == "DELETED" else body)


def remember(key: Key, body: Mapping[str, Any] | None) -> None:
    """The object as just seen (an event, or a read of the apiserver), None
    when it is absent. Kinds the watches do not deliver are not kept: nothing
    would tell when a copy of them goes stale."""
    global _sweep_at
    if (key[0], key[1]) not in KINDS:
        return
    kept = None
    if body is not None:
        # managedFields is most of a small object's size, and no reader wants it.
        trimmed = {k: v for k, v in body.items() if k != "metadata"}
        trimmed["metadata"] = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        kept = _encode(trimmed)
    now = time.monotonic()
    with _guard:
        _objects[key] = (now, kept)
        if len(_objects) > _sweep_at:  # drop what is too old to answer from
            for old in [k for k, (seen, _) in _objects.items() if now - seen > MAX_AGE]:
                del _objects[old]
            _sweep_at = max(1024, 2 * len(_objects))


def get(api_version: str, kind: str, namespace: str, name: str) -> Any:
    """A copy of the object as last seen, None when it was seen to be
    absent, or UNKNOWN when not seen within MAX_AGE."""
    with _guard:
        seen = _objects.get((api_version, kind, namespace, name))
    if seen is None or time.monotonic() - seen[0] > MAX_AGE:
        return UNKNOWN
    return None if seen[1] is None else json.loads(seen[1])


def size() -> int:
    """Objects known to exist."""
    with _guard:
        return sum(1 for _, body in _objects.values() if body is not None)


def clear() -> None:
    """Forget everything (tests; an operator starting again lists afresh)."""
    with _guard:
        _objects.clear()
