"""What a finished training Job says: success with metrics, or why it failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jobs import job_failure_reason, job_finished, json_object, newest_termination

# Container states kubelet reports, in the words a person should read.
_EXPLAINED = {
    "OOMKilled": "the container ran out of memory; raise spec.resources.limits.memory",
    "DeadlineExceeded": "spec.activeDeadlineSeconds elapsed before training finished",
    "BackoffLimitExceeded": "every attempt failed (spec.backoffLimit retries)",
}


@dataclass(frozen=True)
class TrainingOutcome:
    succeeded: bool
    result: dict[str, Any] | None
    failure: dict[str, Any] | None  # wire-format Failure


def read_training_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> TrainingOutcome:
    state = job_finished(job)
    terminated = newest_termination(pods)
    result = json_object(terminated.get("message")) if terminated else None
    if state == "Complete":
        return TrainingOutcome(True, result, None)
    reason = (terminated or {}).get("reason") or "Error"
    job_reason = job_failure_reason(job)
    if reason != "OOMKilled" and job_reason == "DeadlineExceeded":
        reason = job_reason
    message = None
    if result and isinstance(result.get("error"), dict):
        reason = result["error"].get("reason") or reason
        message = result["error"].get("message")
    failure = {
        "reason": reason,
        "exitCode": (terminated or {}).get("exitCode"),
        "message": message or _EXPLAINED.get(reason) or _EXPLAINED.get(job_reason or "", ""),
    }
    if not result and terminated and terminated.get("message"):
        failure["logTail"] = terminated["message"][-2000:]
    return TrainingOutcome(False, result, failure)


def attempts(pods: list[dict[str, Any]]) -> int:
    return len(pods)
