"""The one level-based reconcile every kind goes through.

parse spec -> assess (kind-specific) -> status -> Events. Create, update,
resume and the resync timer all land here, so nothing depends on seeing a
particular change: the object's current state is all that counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from ..api.conditions import FALSE, TRUE, ConditionUpdate, find, merge_conditions
from ..api.kinds import Kind
from ..integrations import children, tracking
from ..metrics import PHASES, RECONCILE_SECONDS, RECONCILES
from . import wake
from .backoff import Backoff

ACCEPTED, READY = "Accepted", "Ready"
# Ready reasons that mean a dependency is down, not that the object is wrong:
# the object waits a growing delay between attempts (backoff.py) instead of
# trying again on every resync tick.
UNAVAILABLE = frozenset({"MLflowUnavailable", "ArtifactStoreUnavailable"})
DEPENDENCY_BACKOFF = Backoff(first=5.0, cap=60.0)
# At most this many validation problems are listed in one message.
_MAX_ERRORS = 5


@dataclass
class Assessment:
    """What a kind's logic concluded: the phase, conditions and other status fields."""

    phase: str
    conditions: list[ConditionUpdate]
    fields: dict[str, Any] = field(default_factory=dict)
    # Events beyond condition changes: (type, reason, message).
    events: list[tuple[str, str, str]] = field(default_factory=list)
    # Seconds until the object has work due (a canary's next check): it is
    # woken then, not at its next resync. None: nothing is due.
    wake_after: float | None = None


Assess = Callable[[BaseModel, Mapping[str, Any]], Assessment]


# kopf runs an object's timer apart from its create/update handlers, so two
# reconciles of one object can overlap; one lock per object keeps them in turn
# (otherwise both could, say, create an MLflow run before either wrote status).
_object_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()

# Objects whose delete handler ran, by uid, with when. The timer runs apart
# from the delete handler too: a reconcile already under way when the object
# was deleted would otherwise put back its lock, its status write, its phase
# and its children's records after the handler dropped them, for good. In
# order of deletion; kept DELETED_MEMORY_SECONDS, far longer than a reconcile.
_deleted: dict[str, float] = {}
DELETED_MEMORY_SECONDS = 600.0


def _lock_for(uid: str) -> threading.Lock:
    with _locks_guard:
        if uid in _deleted:  # a lock nobody keeps: the object is gone
            return threading.Lock()
        return _object_locks.setdefault(uid, threading.Lock())


def forget_object(kind: str, namespace: str, name: str, uid: str) -> None:
    """The object is being deleted: drop what this process keeps for it, and
    see that a reconcile still running does not keep it again."""
    now = time.monotonic()
    with _locks_guard:
        _object_locks.pop(uid, None)
        _deleted[uid] = now
        while _deleted:  # in order of deletion: the oldest first
            oldest, when = next(iter(_deleted.items()))
            if when >= now - DELETED_MEMORY_SECONDS:
                break
            del _deleted[oldest]
    _drop_state(kind, namespace, name, uid)


def _was_deleted(uid: str) -> bool:
    with _locks_guard:
        return uid in _deleted


# What a kind's own module keeps by uid (a canary's metric baseline, an
# alias move's backoff), dropped with the rest: each registers how.
_KIND_FORGETTERS: list[Callable[[str], None]] = []


def forget_with_object(forget: Callable[[str], None]) -> None:
    """Have `forget(uid)` called when an object is deleted."""
    _KIND_FORGETTERS.append(forget)


def _drop_state(kind: str, namespace: str, name: str, uid: str) -> None:
    _own_writes.pop(uid, None)
    DEPENDENCY_BACKOFF.forget(f"{uid}/")
    PHASES.forget(kind, namespace, name)
    children.forget_owned_by(uid)
    tracking.forget_attempts(uid)
    for forget in _KIND_FORGETTERS:
        forget(uid)


# The status this process last wrote to each object, until the object shows
# it. kopf hands each handler the body it had when the handler was queued: a
# timer tick (or a wake-up) that waited on the object's lock while another
# reconcile ran gets a body without that reconcile's status write, which kopf
# applies only after the handler returns. Acting on it, the reconcile started
# over: it looked the MLflow run up and POSTed the Job again (answered 409;
# 63% of TrainingRuns at N = 1,000) and wrote the status again (23 writes a
# TrainingRun in the apiserver-restart test under load, against a limit of
# 12). The operator is the status's only writer, so what it wrote is the
# truth until the object catches up; a write that never lands (kopf's patch
# failed) is trusted for OWN_WRITE_GRACE seconds only, then written again.
_own_writes: dict[str, tuple[float, dict[str, Any]]] = {}
OWN_WRITE_GRACE = 60.0


def _known_status(uid: str, persisted: Mapping[str, Any]) -> dict[str, Any]:
    """The object's status as this process knows it: what it shows, with what
    this process wrote that it does not show yet."""
    entry = _own_writes.get(uid)
    if entry is None:
        return dict(persisted)
    written_at, written = entry
    landed = all(persisted.get(k) == v for k, v in written.items())
    if landed or time.monotonic() - written_at > OWN_WRITE_GRACE:
        _own_writes.pop(uid, None)
        return dict(persisted)
    return {**persisted, **written}


def _remember_write(uid: str, changes: Mapping[str, Any]) -> None:
    pending = _own_writes.get(uid, (0.0, {}))[1]
    _own_writes[uid] = (time.monotonic(), {**pending, **changes})


def reconcile(kind: Kind, body: Mapping[str, Any], patch: kopf.Patch, assess: Assess) -> None:
    meta = body["metadata"]
    uid = meta.get("uid", meta["name"])
    with _lock_for(uid):
        if _was_deleted(uid):  # queued before the deletion: nothing left to do
            return
        _reconcile(kind, body, patch, assess, uid)
    if _was_deleted(uid):  # deleted while this ran: what it kept goes too
        # (A new object of the same name loses its phase gauge until its
        # next reconcile records it again.)
        _drop_state(kind.kind, meta.get("namespace", ""), meta["name"], uid)


def _reconcile(
    kind: Kind, body: Mapping[str, Any], patch: kopf.Patch, assess: Assess, uid: str
) -> None:
    started = time.monotonic()
    meta = body["metadata"]
    result = "ok"
    # A new generation (the user changed the spec) is tried at once. One entry
    # an object, whatever its generation: an entry a generation stayed until
    # the object was deleted.
    backoff_key, generation = f"{uid}/dependency", meta.get("generation")
    if not DEPENDENCY_BACKOFF.due(backoff_key, generation):
        RECONCILES.labels(kind.kind, "backoff").inc()
        return
    old = _known_status(uid, body.get("status") or {})
    # What the kind's logic reads: the body, with the status as we know it.
    current = {**body, "status": old}
    try:
        spec = kind.spec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        assessment, result = invalid_spec(err), "invalid"
    else:
        try:
            assessment = assess(spec, current)
        except ApiException as err:
            # Forbidden, conflicts, an apiserver restarting: try again soon,
            # with the API's own words rather than a traceback.
            RECONCILES.labels(kind.kind, "error").inc()
            raise kopf.TemporaryError(
                f"Kubernetes API: {err.status} {err.reason}", delay=10
            ) from err
    if _waits_on_dependency(assessment):
        failures, delay = DEPENDENCY_BACKOFF.failed(backoff_key, generation)
        assessment.conditions = [
            replace(c, message=f"{c.message} (attempt {failures}; next in {delay:.0f} s)")
            if c.type == READY
            else c
            for c in assessment.conditions
        ]
        result = "unavailable"
    else:
        DEPENDENCY_BACKOFF.succeeded(backoff_key)
    new = render_status(old, assessment, meta.get("generation"))
    changes = {k: v for k, v in new.items() if old.get(k) != v}
    if changes:
        patch.status.update(changes)
        _remember_write(uid, changes)
    announce(body, old.get("conditions"), new["conditions"])
    for type_, reason, message in assessment.events:
        kopf.event(body, type=type_, reason=reason, message=message)
    if assessment.wake_after is not None:
        wake.request_reconcile_after(
            kind.kind, meta.get("namespace", ""), meta["name"], assessment.wake_after
        )
    PHASES.record(kind.kind, meta.get("namespace", ""), meta["name"], new["phase"])
    RECONCILES.labels(kind.kind, result).inc()
    RECONCILE_SECONDS.labels(kind.kind).observe(time.monotonic() - started)


def _waits_on_dependency(assessment: Assessment) -> bool:
    return any(c.type == READY and c.reason in UNAVAILABLE for c in assessment.conditions)


def render_status(
    old: Mapping[str, Any], assessment: Assessment, generation: int | None
) -> dict[str, Any]:
    """The status the object should have; equal to `old` when nothing changed."""
    # merge_conditions keeps each lastTransitionTime whose status did not flip,
    # so re-reconciling an unchanged object yields `old` and writes nothing.
    conditions = merge_conditions(old.get("conditions"), assessment.conditions, generation)
    return {
        **assessment.fields,
        "phase": assessment.phase,
        "observedGeneration": generation,
        "conditions": conditions,
    }


def invalid_spec(err: ValidationError) -> Assessment:
    """A spec the apiserver let through but the models refuse (an old CRD, a
    bypassed webhook): say which field and why, and stop there."""
    message = describe_validation_error(err)
    reason = "InvalidSpec"
    return Assessment(
        phase="Failed",
        conditions=[
            ConditionUpdate(ACCEPTED, FALSE, reason, message),
            ConditionUpdate(READY, FALSE, reason, "fix the spec: " + message),
        ],
    )


def describe_validation_error(err: ValidationError) -> str:
    problems = []
    for error in err.errors()[:_MAX_ERRORS]:
        problems.append(f"{field_path(error['loc'])}: {error['msg']}")
    extra = err.error_count() - _MAX_ERRORS
    if extra > 0:
        problems.append(f"and {extra} more")
    return "; ".join(problems)


def field_path(loc: tuple[int | str, ...]) -> str:
    """('trainer', 'metrics', 0) -> 'spec.trainer.metrics[0]', as kubectl names fields."""
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def announce(
    body: Mapping[str, Any],
    old: list[dict[str, Any]] | None,
    new: list[dict[str, Any]],
) -> None:
    """One Event per change of conditions, except an object's first
    Accepted=True: every valid object would get the same Event (status says
    it), and at 1,000 objects that is 1,000 writes. Conditions that change
    together for one reason (Ready=False and Progressing=True, both "waiting
    for a ready model-server pod") share one Event, named after the first."""
    changed: dict[str, list[dict[str, Any]]] = {}
    for condition in new:
        before = find(old, condition["type"])
        if before and (before["status"], before["reason"]) == (
            condition["status"],
            condition["reason"],
        ):
            continue
        if before is None and (condition["type"], condition["status"]) == (ACCEPTED, TRUE):
            continue
        changed.setdefault(condition["message"], []).append(condition)
    for message, together in changed.items():
        bad = any(c["status"] == FALSE and c["type"] == ACCEPTED for c in together)
        states = ", ".join(f"{c['type']}={c['status']}" for c in together)
        kopf.event(
            body,
            type="Warning" if bad else "Normal",
            reason=together[0]["reason"] or together[0]["type"],
            message=f"{states}: {message}",
        )


def accepted(message: str = "spec is valid and its references resolve") -> ConditionUpdate:
    return ConditionUpdate(ACCEPTED, TRUE, "Valid", message)
