"""What a finished drift-check Job says, and the drift status it leads to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .jobs import job_failure_reason, job_finished, json_object, newest_termination

MAX_FEATURES_IN_STATUS = 20


def read_drift_outcome(job: Mapping[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The check's result (`result` is Drift, NoDrift or InsufficientData) or an
    Error with the reason, from the pod's termination message."""
    terminated = newest_termination(pods) or {}
    message = json_object(terminated.get("message"))
    if job_finished(dict(job)) == "Complete" and message and message.get("ok"):
        return message
    if message and isinstance(message.get("error"), dict):
        error = message["error"]
        return {"result": "Error", "reason": error.get("reason"), "message": error.get("message")}
    reason = terminated.get("reason") or job_failure_reason(dict(job)) or "Error"
    text = (terminated.get("message") or "").strip()[-500:] or "the check left no result"
    return {"result": "Error", "reason": reason, "message": text}


def next_drift_status(
    old: Mapping[str, Any] | None, outcome: Mapping[str, Any], job: str, finished: str | None
) -> dict[str, Any]:
    """status.drift after one more check. Drift in a row counts up; NoDrift
    resets; InsufficientData and errors leave the count as it was (they say
    nothing about the data)."""
    old = dict(old or {})
    result = outcome["result"]
    consecutive = old.get("consecutiveDetections") or 0
    if result == "Drift":
        consecutive += 1
    elif result == "NoDrift":
        consecutive = 0
    status: dict[str, Any] = {
        "lastCheckTime": finished,
        "result": result,
        "consecutiveDetections": consecutive,
        "job": job,
        "share": outcome.get("share"),
        "reportUri": outcome.get("reportUri"),
        "features": _features(outcome.get("features")),
        "message": describe(outcome),
    }
    return {k: v for k, v in status.items() if v is not None}


def describe(outcome: Mapping[str, Any]) -> str:
    result = outcome["result"]
    if result == "Error":
        return f"drift check failed ({outcome.get('reason')}): {outcome.get('message')}"
    # The verdict stands without MLflow, but the user should know its run is missing.
    missing = outcome.get("mlflowError")
    return _verdict(outcome) + (f"; not recorded in MLflow: {missing}" if missing else "")


def _verdict(outcome: Mapping[str, Any]) -> str:
    current = (outcome.get("rows") or {}).get("current")
    if outcome["result"] == "InsufficientData":
        return f"only {current} logged rows in the window; not enough to judge drift"
    drifted = [f["name"] for f in outcome.get("features") or [] if f.get("drifted")]
    share = outcome.get("share") or 0.0
    threshold = outcome.get("threshold")
    verdict = "drift" if outcome["result"] == "Drift" else "no drift"
    named = f": {', '.join(drifted)}" if drifted else ""
    limit = f" (threshold {threshold:.0%})" if isinstance(threshold, int | float) else ""
    return f"{verdict}: {share:.0%} of features drifted{limit} over {current} rows{named}"


def _features(features: Any) -> list[dict[str, Any]] | None:
    if not features:
        return None
    chosen = sorted(features, key=lambda f: (not f.get("drifted"), f.get("name", "")))
    return [
        {k: f[k] for k in ("name", "score", "drifted") if f.get(k) is not None}
        for f in chosen[:MAX_FEATURES_IN_STATUS]
    ]
