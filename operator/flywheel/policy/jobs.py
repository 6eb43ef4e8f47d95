"""Reading a Job and its pods the way the Job controller and kubelet left them."""

from __future__ import annotations

import json
from typing import Any

from ..api.conditions import find


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


# Container states a pod can sit in forever: nothing will change until a
# person fixes the image, the pull secret or the referenced Secret/ConfigMap.
_STUCK = {
    "ErrImagePull": "the image cannot be pulled; check the image name and its pull secret",
    "ImagePullBackOff": "the image cannot be pulled; check the image name and its pull secret",
    "ErrImageNeverPull": "the image is not on the node and imagePullPolicy is Never",
    "InvalidImageName": "the image name is not valid",
    "CreateContainerConfigError": "a Secret or ConfigMap (or a key) the pod refers to is missing",
    "CreateContainerError": "the container cannot be created",
    "CrashLoopBackOff": "the container keeps crashing",
}


def job_has_started(job: dict[str, Any]) -> bool:
    """Whether the Job controller has acted on the Job (it sets startTime as it
    makes the first pod): before that there are no pods to list."""
    status = job.get("status") or {}
    return bool(status.get("startTime") or status.get("active") or status.get("failed"))


def deployment_has_synced(deployment: dict[str, Any]) -> bool:
    """Whether the Deployment controller has acted on the Deployment at all:
    a new one has no status, and no pods to list."""
    return (deployment.get("status") or {}).get("observedGeneration") is not None


# The scheduler's explanation can list every node pool; a condition keeps its gist.
_SCHEDULER_MESSAGE_CHARS = 400


def stuck_pod(
    pods: list[dict[str, Any]], placement_field: str | None = None
) -> tuple[str, str] | None:
    """(reason, message) when a pod waits in a state only a person (or a node
    autoscaler) can end, e.g. ('ImagePullBackOff', 'pod x: container train:
    ...') or ('Unschedulable', 'pod x cannot be scheduled: 0/3 nodes are
    available: ...'), else None. `placement_field` names the spec field that
    says where the pods may run, for the message's fix."""
    for pod in pods:
        unschedulable = _unschedulable(pod)
        if unschedulable is not None:
            message = f"pod {pod['metadata']['name']} cannot be scheduled"
            if unschedulable:
                message += f": {unschedulable[:_SCHEDULER_MESSAGE_CHARS]}"
            fix = "add nodes or capacity that fit it"
            if placement_field:
                fix = f"{placement_field} sets its nodeSelector and tolerations; or {fix}"
            return "Unschedulable", f"{message} ({fix})"
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        statuses += (pod.get("status") or {}).get("initContainerStatuses") or []
        for status in statuses:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK:
                detail = (waiting.get("message") or "").strip()
                message = (
                    f"pod {pod['metadata']['name']}: container {status['name']}: {_STUCK[reason]}"
                )
                return reason, f"{message} ({detail})" if detail else message
    return None


def _unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's reason ('' when it gave none) for a pod it found no
    node for, else None. The scheduler sets PodScheduled=False/Unschedulable."""
    scheduled = find((pod.get("status") or {}).get("conditions"), "PodScheduled") or {}
    if (scheduled.get("status"), scheduled.get("reason")) == ("False", "Unschedulable"):
        return (scheduled.get("message") or "").strip()
    return None


def failed_attempt(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the newest pod that ended with the workload's own
    error report, e.g. ('SourceUnreachable', 'attempt 1 of the Job failed: cannot
    list s3://... at http://...'), while the Job may still retry; else None."""
    terminated = newest_termination(pods)
    result = json_object((terminated or {}).get("message"))
    error = (result or {}).get("error")
    if not isinstance(error, dict) or result.get("ok") or not error.get("reason"):
        return None
    failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
    return error["reason"], f"attempt {failed} failed: {error.get('message', '')}"
