"""When to snapshot a Dataset, and what a finished snapshot Job means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ..api.stamps import as_time
from .jobs import job_failure_reason, job_finished, json_object, newest_termination

Action = Literal["start", "wait", "collect", "idle"]
# A failed snapshot (source unreachable, bad credentials, bad data) is tried
# again after this long, so a fixed outage heals without anyone editing spec.
RETRY_FAILED_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class SnapshotPlan:
    action: Action
    sequence: int
    why: str


def plan_snapshot(
    attempt: dict[str, Any] | None,
    generation: int | None,
    job: dict[str, Any] | None,
    last_snapshot_time: datetime | None,
    refresh: timedelta | None,
    now: datetime,
) -> SnapshotPlan:
    """What to do next, given the latest attempt recorded in status and its Job."""
    if attempt is None:
        return SnapshotPlan("start", 1, "first snapshot")
    sequence = attempt["sequence"]
    if attempt["state"] == "Running":
        if job is None:
            return SnapshotPlan("start", sequence + 1, f"Job {attempt['jobName']} disappeared")
        if job_finished(job):
            return SnapshotPlan("collect", sequence, "snapshot Job finished")
        return SnapshotPlan("wait", sequence, "snapshot Job running")
    if attempt.get("generation") != generation:
        return SnapshotPlan("start", sequence + 1, "the spec changed")
    finished = as_time(attempt.get("finishTime"))
    if attempt["state"] == "Failed" and finished and now - finished >= RETRY_FAILED_AFTER:
        return SnapshotPlan("start", sequence + 1, "retrying the failed snapshot")
    if refresh and last_snapshot_time and now - last_snapshot_time >= refresh:
        return SnapshotPlan("start", sequence + 1, "refresh interval elapsed")
    return SnapshotPlan("idle", sequence, "up to date")


@dataclass(frozen=True)
class SnapshotOutcome:
    ok: bool
    result: dict[str, Any] | None  # the workload's JSON when it reported one
    reason: str
    message: str


def read_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> SnapshotOutcome:
    """Interpret a finished Job from its newest pod's termination message."""
    terminated = newest_termination(pods) or {}
    message, exit_code = terminated.get("message"), terminated.get("exitCode")
    result = json_object(message)
    if result and result.get("ok"):
        return SnapshotOutcome(True, result, "Snapshotted", "snapshot finished")
    if result and isinstance(result.get("error"), dict):
        error = result["error"]
        return SnapshotOutcome(
            False, result, error.get("reason", "SnapshotFailed"), error.get("message", "")
        )
    why = job_failure_reason(job)
    detail = f" (exit code {exit_code})" if exit_code is not None else ""
    tail = f": {message.strip()[-500:]}" if message else ""
    return SnapshotOutcome(
        False, None, why or "SnapshotFailed", f"snapshot Job failed{detail}{tail}"
    )
