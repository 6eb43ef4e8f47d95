"""Dataset controller: snapshot Jobs in, version, validation and profile out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.common import parse_duration
from ..api.conditions import FALSE, TRUE, ConditionUpdate
from ..api.dataset import DatasetSpec
from ..api.kinds import DATASET
from ..api.stamps import as_time, format_stamp
from ..builders.snapshot import build_snapshot_job
from ..integrations import children, kube
from ..policy.jobs import failed_attempt, stuck_pod
from ..policy.snapshots import plan_snapshot, read_outcome
from ..settings import Settings
from .handlers import register
from .reconcile import READY, Assessment, accepted, reconcile

SETTINGS = Settings.from_env()


def assess(spec: DatasetSpec, body: Mapping[str, Any], settings: Settings = SETTINGS) -> Assessment:
    meta, status = body["metadata"], dict(body.get("status") or {})
    namespace = meta["namespace"]
    attempt = status.get("snapshot")
    now = datetime.now(UTC)
    job = None
    if attempt and attempt["state"] == "Running":
        job = children.get("batch/v1", "Job", namespace, attempt["jobName"])
    plan = plan_snapshot(
        attempt,
        meta.get("generation"),
        job,
        as_time(status.get("lastSnapshotTime")),
        parse_duration(spec.refresh_interval) if spec.refresh_interval else None,
        now,
    )
    if plan.action == "start":
        job = build_snapshot_job(body, spec, plan.sequence, settings)
        kube.ensure_job(job)
        return _snapshotting(status, job["metadata"]["name"], plan, meta.get("generation"), now)
    if plan.action == "collect":
        pods = kube.job_pods(namespace, attempt["jobName"])
        return _collected(status, attempt, read_outcome(job, pods), now)
    if job is not None and status.get("phase") != "Ready":
        # A snapshot that cannot start (image, missing Secret) says so.
        pods = kube.job_pods(namespace, attempt["jobName"])
        stuck = stuck_pod(pods)
        if stuck:
            return Assessment("Snapshotting", [accepted(), ConditionUpdate(READY, FALSE, *stuck)])
        # An attempt that failed (the store down, say) is named while the Job retries.
        failed = failed_attempt(pods)
        if failed:
            reason, why = failed
            retrying = f"{why}; Job {attempt['jobName']} retries it"
            return Assessment(
                "Snapshotting", [accepted(), ConditionUpdate(READY, FALSE, reason, retrying)]
            )
        running = f"taking snapshot {attempt['sequence']}: Job {attempt['jobName']}"
        return Assessment(
            "Snapshotting", [accepted(), ConditionUpdate(READY, FALSE, "Snapshotting", running)]
        )
    return _unchanged(status)


def _snapshotting(status, job_name, plan, generation, now) -> Assessment:
    attempt = {
        "sequence": plan.sequence,
        "jobName": job_name,
        "generation": generation,
        "state": "Running",
        "startTime": format_stamp(now),
    }
    fields = {"snapshot": attempt}
    if status.get("version") and status.get("phase") == "Ready":
        # A refresh: the current version stays usable while the next is taken.
        return Assessment("Ready", [accepted(), _ready_from(status)], fields)
    waiting = ConditionUpdate(READY, FALSE, "Snapshotting", f"{plan.why}: Job {job_name}")
    return Assessment("Snapshotting", [accepted(), waiting], fields)


def _collected(status, attempt, outcome, now) -> Assessment:
    finished = {
        **attempt,
        "state": "Succeeded" if outcome.ok else "Failed",
        "finishTime": format_stamp(now),
    }
    if not outcome.ok:
        failed = ConditionUpdate(READY, FALSE, outcome.reason, outcome.message)
        return Assessment("Failed", [accepted(), failed], {"snapshot": finished})
    result = outcome.result
    validation = result.get("validation") or {"passed": True, "failures": []}
    fields = {
        "snapshot": finished,
        "version": result["version"],
        "rows": result.get("rows"),
        "profile": {
            "columns": result.get("columns"),
            "nullCells": result.get("nullCells"),
            "bytes": result.get("bytes"),
            "objects": result.get("objects"),
        },
        "profileUri": result.get("profileUri"),
        "validation": validation,
        "lastSnapshotTime": format_stamp(now),
    }
    events = []
    if status.get("version") and status["version"] != result["version"]:
        change = f"data changed: version {status['version'][:12]} -> {result['version'][:12]}"
        events.append(("Normal", "NewVersion", change))
    if validation.get("passed"):
        return Assessment("Ready", [accepted(), _ready_from(fields)], fields, events)
    failures = validation.get("failures") or []
    named = "; ".join(_describe(f) for f in failures[:3]) or "validation failed"
    more = f" (and {len(failures) - 3} more in status.validation)" if len(failures) > 3 else ""
    invalid = ConditionUpdate(READY, FALSE, "ValidationFailed", named + more)
    return Assessment("Failed", [accepted(), invalid], fields, events)


def _describe(failure: Mapping[str, Any]) -> str:
    column = f" on column {failure['column']!r}" if failure.get("column") else ""
    return f"rule {failure.get('rule')}{column}: {failure.get('message', '')}"


def _ready_from(status: Mapping[str, Any]) -> ConditionUpdate:
    version = (status.get("version") or "")[:12]
    return ConditionUpdate(
        READY, TRUE, "Validated", f"version {version}: {status.get('rows')} rows, validated"
    )


def _unchanged(status: Mapping[str, Any]) -> Assessment:
    """Nothing to do: restate what status already says."""
    kept = [c for c in status.get("conditions") or [] if c["type"] == READY]
    ready = (
        [ConditionUpdate(READY, kept[0]["status"], kept[0]["reason"], kept[0]["message"])]
        if kept
        else []
    )
    return Assessment(status.get("phase") or "Pending", [accepted(), *ready])


def reconcile_dataset(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile(DATASET, body, patch, assess)


register(DATASET, reconcile_dataset)
