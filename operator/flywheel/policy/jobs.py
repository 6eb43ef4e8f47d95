"""Reading a Job and its pods the way the Job controller and kubelet left them."""

from __future__ import annotations

import json
from typing import Any


def job_finished(job: dict[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller has decided, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def job_failure_reason(job: dict[str, Any]) -> str | None:
    """DeadlineExceeded, BackoffLimitExceeded, PodFailurePolicy, ... of a failed Job."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return condition.get("reason")
    return None


def newest_termination(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The terminated state (exitCode, reason, message) of the newest pod's container."""
    newest_first = sorted(
        pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True
    )
    for pod in newest_first:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                return terminated
    return None


def json_object(text: str | None) -> dict[str, Any] | None:
    """The workload's JSON result, or None when the message is not one."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
