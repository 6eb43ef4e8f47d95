"""Waking an object when something it waits on changes.

Every kind reconciles on create, update and a resync timer (handlers.py). An
object that waits on another one (a TrainingRun on its Dataset and its Job,
a ModelVersion on its TrainingRun, an InferenceService on its ModelVersions,
its retraining runs and its drift-check Jobs) would otherwise see the change
only at its next resync, up to FLYWHEEL_RESYNC_SECONDS later.

So the operator watches what objects wait on, and when its state changes
(a phase, a version, a Job finishing), stamps the waiting object's
`reconcile.flywheel.dev/requestedAt` annotation. kopf sees an update and
reconciles it at once. It is the same request a person can make by hand
(`kubectl annotate ... reconcile.flywheel.dev/requestedAt="$(date)" --overwrite`),
as with Flux's reconcile.fluxcd.io/requestedAt.

A canary's analysis changes nothing anyone watches while it measures, so an
InferenceService also sets itself an alarm for its next check's due time
(request_reconcile_after), which stamps the same annotation.

Why an annotation and not an in-process call: the wake-up is handled as any
edit is, with kopf's retries, progress records and a fresh body; like the
timer's, it takes the object's lock, and the reconcile trusts its own last
status write until the body shows it (reconcile.py). It costs two writes per
wake-up (the stamp and kopf's record of having handled it), only when
something changed: a converged cluster is still quiet.

The annotation's prefix is deliberately not mlops.flywheel.dev: kopf leaves
out of its diff the annotations under a prefix marked as a kopf operator's
(objects from before kopf's records moved to status carry that mark), so a
stamp there would not count as an update.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..api.common import GROUP, VERSION
from ..api.kinds import BY_KIND
from ..builders.common import MANAGED_BY
from ..builders.retrain import RETRAIN_OF
from ..builders.serving import SERVICE_LABEL
from ..config import RESYNC_SECONDS
from ..integrations import kube, watched
from ..integrations.kube import FIELD_MANAGER

REQUESTED_AT = "reconcile.flywheel.dev/requestedAt"
PLURALS = {kind: k.plural for kind, k in BY_KIND.items()}
# A child's owner, from the label every child carries (builders/common.labels).
OWNER_LABELS = {
    f"{GROUP}/dataset": "Dataset",
    f"{GROUP}/trainingrun": "TrainingRun",
    f"{GROUP}/inferenceservice": "InferenceService",
}
log = logging.getLogger(__name__)

Ref = tuple[str, str]  # (kind, name), in the object's own namespace


# --- What each kind waits on ------------------------------------------------


def waits_on(kind: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> set[Ref]:
    """The objects whose changes this object's reconcile depends on."""
    if kind == "TrainingRun":
        return _refs(("Dataset", (spec.get("datasetRef") or {}).get("name")))
    if kind == "ModelVersion":
        return _refs(("TrainingRun", (spec.get("source") or {}).get("trainingRun")))
    if kind == "InferenceService":
        retrain = status.get("retrain") or {}
        models = [
            (spec.get("stable") or {}).get("modelVersion"),
            (spec.get("canary") or {}).get("modelVersion"),
            retrain.get("candidate"),
            (status.get("canary") or {}).get("modelVersion"),
        ]
        runs = list(retrain.get("inFlight") or [])
        return _refs(*(("ModelVersion", m) for m in models), *(("TrainingRun", r) for r in runs))
    return set()


def _refs(*pairs: tuple[str, str | None]) -> set[Ref]:
    return {(kind, name) for kind, name in pairs if name}


def _index_id(kind: str) -> str:
    """The index's name, which is also the kwarg kopf passes it to handlers as."""
    return f"waiting_{PLURALS[kind]}"


def _register_index(kind: str) -> None:
    def index(namespace: str, name: str, spec, status, **_: Any):
        return {(namespace, *ref): name for ref in waits_on(kind, spec or {}, status or {})}

    kopf.index(GROUP, VERSION, PLURALS[kind], id=_index_id(kind))(index)


# One index per waiting kind: (namespace, kind, name) -> the names waiting on it.
WAITING_KINDS = ("TrainingRun", "ModelVersion", "InferenceService")
for _kind in WAITING_KINDS:
    _register_index(_kind)


# --- What counts as a change ------------------------------------------------


def state_of(kind: str, body: Mapping[str, Any]) -> tuple:
    """The part of an object's state that those waiting on it act upon; its
    other changes (timestamps, messages, metrics) wake nobody."""
    status = body.get("status") or {}
    if kind == "Deployment":
        return (
            status.get("observedGeneration"),
            status.get("replicas"),
            status.get("readyReplicas"),
            status.get("updatedReplicas"),
            status.get("availableReplicas"),
        )
    if kind == "Job":
        # Only its end: a wake-up costs two writes, and a Job's start changes
        # nothing its owner has to act on at once.
        return tuple(
            sorted(
                c.get("type")
                for c in status.get("conditions") or []
                if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
            )
        )
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return (
        status.get("phase"),
        status.get("version"),
        status.get("servable"),
        status.get("registryVersion"),
        status.get("modelVersion"),
        status.get("mlflowRunId"),
        ready.get("status"),
        ready.get("reason"),
    )


class Changes:
    """The last state seen of each watched object, so that only a change wakes."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], tuple] = {}
        self._guard = threading.Lock()

    def changed(
        self, kind: str, namespace: str, name: str, event: str | None, state, new_is_news=True
    ) -> bool:
        """Whether this watch event changed `state`. A new object is news when
        `new_is_news` (a reference that did not resolve now does); a child the
        operator just created is not (its owner is the one who made it)."""
        key = (kind, namespace, name)
        with self._guard:
            if event == "DELETED":
                self._seen.pop(key, None)
                return True
            before = self._seen.get(key)
            self._seen[key] = state
        if before is None:
            # The operator's first listing (event None) is covered by the
            # resume handlers.
            return new_is_news and event == "ADDED"
        return before != state


CHANGES = Changes()


# --- Waking -----------------------------------------------------------------


def request_reconcile(kind: str, namespace: str, name: str, why: str) -> None:
    """Stamp the annotation; an object that is gone or going is left alone."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"metadata": {"annotations": {REQUESTED_AT: stamp}}}
    try:
        client.CustomObjectsApi(kube.api()).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name, body, field_manager=FIELD_MANAGER
        )
    except ApiException as err:
        if err.status == 404:
            return
        log.warning("could not wake %s %s/%s (%s): %s", kind, namespace, name, why, err.reason)
        return
    log.info("woke %s %s/%s: %s", kind, namespace, name, why)


class _Alarms:
    """At most one pending timed wake-up per object, the earliest asked for."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str], tuple[float, threading.Timer]] = {}
        self._guard = threading.Lock()

    def set(self, kind: str, namespace: str, name: str, delay: float) -> bool:
        key = (kind, namespace, name)
        due = time.monotonic() + delay
        with self._guard:
            pending = self._pending.get(key)
            if pending is not None and pending[0] <= due + ALARM_SLACK:
                return False  # an earlier one will do
            if pending is not None:
                pending[1].cancel()
            timer = threading.Timer(delay, self._ring, args=(key,))
            timer.daemon = True
            self._pending[key] = (due, timer)
            timer.start()
            return True

    def _ring(self, key: tuple[str, str, str]) -> None:
        with self._guard:
            self._pending.pop(key, None)
        try:
            request_reconcile(*key, "its next check is due")
        except Exception:  # a thread of its own: say so, the resync still comes
            log.exception("could not wake %s %s/%s", *key)

    def pending(self) -> int:
        with self._guard:
            return len(self._pending)


ALARMS = _Alarms()
# A wake-up this close after a pending one is not worth a second.
ALARM_SLACK = 0.5


def request_reconcile_after(kind: str, namespace: str, name: str, delay: float) -> None:
    """Wake the object in `delay` seconds, unless its resync comes first."""
    delay = max(delay, 0.0) + ALARM_SLACK  # just after the due time, not just before
    if delay < RESYNC_SECONDS:
        ALARMS.set(kind, namespace, name, delay)


def waiting_on(kind: str, namespace: str, name: str, indexes: Mapping[str, Any]) -> set[Ref]:
    found: set[Ref] = set()
    for waiting_kind, index in indexes.items():
        for waiter in index.get((namespace, kind, name), ()):
            found.add((waiting_kind, waiter))
    return found


# The wake-up handlers below are coroutines: kopf runs them on its event loop
# at once, where a plain function would wait its turn for a handler thread.
# In a burst of 1,000 InferenceServices those threads are all reconciling,
# and every waiting event held its object's body (a Deployment: ~25 KB as
# Python objects) until a thread was free. Only the stamp, an API call, goes
# to a handler thread, and only when something changed.
HANDLER_THREADS: list[Any] = []  # kopf's executor, set at start-up (startup.py)


async def _request_reconcile_in_thread(kind: str, namespace: str, name: str, why: str) -> None:
    loop = asyncio.get_running_loop()
    executor = HANDLER_THREADS[0] if HANDLER_THREADS else None
    await loop.run_in_executor(executor, request_reconcile, kind, namespace, name, why)


async def _on_change(
    kind: str, event: Mapping[str, Any], body, namespace: str, name: str, **kwargs
) -> None:
    if not CHANGES.changed(kind, namespace, name, event.get("type"), state_of(kind, body)):
        return
    indexes = {k: kwargs[_index_id(k)] for k in WAITING_KINDS}
    waiters = waiting_on(kind, namespace, name, indexes)
    if kind == "TrainingRun":
        # A retraining run also wakes the InferenceService that started it.
        service = (body["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if service and (body["metadata"].get("labels") or {}).get(RETRAIN_OF):
            waiters.add(("InferenceService", service))
    why = f"{kind} {name} changed"
    for waiting_kind, waiter in sorted(waiters):
        await _request_reconcile_in_thread(waiting_kind, namespace, waiter, why)


def _register_source(kind: str) -> None:
    async def on_event(event, body, namespace, name, **kwargs):
        await _on_change(kind, event, body, namespace, name, **kwargs)

    kopf.on.event(GROUP, VERSION, PLURALS[kind], id=f"wake_waiting_on_{PLURALS[kind]}")(on_event)


for _kind in ("Dataset", "TrainingRun", "ModelVersion"):
    _register_source(_kind)


def _register_child(group: str, version: str, plural: str, kind: str, deletion_wakes: bool) -> None:
    """A child of ours (a Job finished, a Deployment's pods became ready or
    it was deleted) wakes its owner. Every event also updates the copy
    reconciles read it from (integrations/watched.py), first, so the owner
    it wakes reads what woke it."""
    api_version = f"{group}/{version}" if group else version

    async def on_event(event, body, namespace: str, name: str, labels, **_: Any) -> None:
        watched.record(api_version, kind, event.get("type"), body)
        owners = [(k, labels[key]) for key, k in OWNER_LABELS.items() if key in labels]
        if not owners:
            return
        kind_of_event, state = event.get("type"), state_of(kind, body)
        if not CHANGES.changed(kind, namespace, name, kind_of_event, state, new_is_news=False):
            return
        if kind_of_event == "DELETED" and not deletion_wakes:
            return
        # A child can carry more than one owner label (a retraining run's Job
        # also names the InferenceService); the nearest owner is the one it serves.
        owner_kind, owner = _closest(owners)
        await _request_reconcile_in_thread(owner_kind, namespace, owner, f"{kind} {name} changed")

    selector = {"app.kubernetes.io/managed-by": MANAGED_BY}
    resource = (group, version, plural) if group else (version, plural)
    kopf.on.event(*resource, labels=selector, id=f"wake_owner_of_{plural}")(on_event)
    CHILD_HANDLERS[kind] = on_event


CHILD_HANDLERS: dict[str, Any] = {}  # kind -> its event handler (for the tests)


# A finished Job's deletion (its TTL, its namespace going) asks nothing of its
# owner, and 200 of them at once would be 400 writes; a deleted Deployment
# must be put back.
_register_child("batch", "v1", "jobs", "Job", deletion_wakes=False)
_register_child("apps", "v1", "deployments", "Deployment", deletion_wakes=True)
# A Service's own changes (its status) wake nobody; a deleted one is put back.
_register_child("", "v1", "services", "Service", deletion_wakes=True)


def _closest(owners: list[Ref]) -> Ref:
    order = ("TrainingRun", "Dataset", "InferenceService")
    return min(owners, key=lambda ref: order.index(ref[0]))
