"""Reading drift checks, counting detections, and the retraining policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flywheel.api.inferenceservice import Retrain
from flywheel.policy.drift import next_drift_status, read_drift_outcome
from flywheel.policy.retrain import decide_retrain

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def finished_job(state="Complete"):
    return {"status": {"conditions": [{"type": state, "status": "True", "reason": "X"}]}}


def pod(message, exit_code=0, reason="Completed"):
    terminated = {"exitCode": exit_code, "reason": reason, "message": message}
    return {
        "metadata": {"creationTimestamp": "2026-11-23T11:00:00Z"},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


DRIFT = (
    '{"ok": true, "result": "Drift", "share": 0.5, "threshold": 0.5, "rows": {"current": 900},'
    ' "features": [{"name": "a", "score": 0.01, "drifted": false},'
    ' {"name": "b", "score": 0.9, "drifted": true}], "reportUri": "s3://x/report.html"}'
)


def test_a_drift_verdict_is_read_from_the_termination_message():
    outcome = read_drift_outcome(finished_job(), [pod(DRIFT)])
    status = next_drift_status({}, outcome, "iris-drift-1", "2026-11-23T11:01:00Z")
    assert status["result"] == "Drift" and status["consecutiveDetections"] == 1
    assert status["features"][0] == {"name": "b", "score": 0.9, "drifted": True}  # drifted first
    assert status["message"] == "drift: 50% of features drifted (threshold 50%) over 900 rows: b"
    assert status["reportUri"] == "s3://x/report.html" and status["job"] == "iris-drift-1"


def test_a_verdict_mlflow_missed_says_so():
    unrecorded = (
        DRIFT[:-1] + ', "mlflowError": "cannot start a run at http://mlflow:5000: refused"}'
    )
    outcome = read_drift_outcome(finished_job(), [pod(unrecorded)])
    status = next_drift_status({}, outcome, "iris-drift-1", "2026-11-23T11:01:00Z")
    assert status["result"] == "Drift" and status["consecutiveDetections"] == 1
    assert status["message"].startswith("drift: 50% of features drifted")
    missed = "; not recorded in MLflow: cannot start a run at http://mlflow:5000: refused"
    assert status["message"].endswith(f"over 900 rows: b{missed}")


@pytest.mark.parametrize(
    ("result", "before", "after"),
    [("Drift", 2, 3), ("NoDrift", 2, 0), ("InsufficientData", 2, 2)],
)
def test_consecutive_detections(result, before, after):
    outcome = {"result": result, "rows": {"current": 5}}
    status = next_drift_status({"consecutiveDetections": before}, outcome, "j", None)
    assert status["consecutiveDetections"] == after


def test_a_failed_check_names_its_reason():
    message = '{"ok": false, "error": {"reason": "UnknownFeature", "message": "no column x"}}'
    outcome = read_drift_outcome(finished_job("Failed"), [pod(message, 41, "Error")])
    assert outcome == {"result": "Error", "reason": "UnknownFeature", "message": "no column x"}
    crashed = read_drift_outcome(
        finished_job("Failed"), [pod("Traceback ... MemoryError", 1, "Error")]
    )
    assert crashed["result"] == "Error" and "MemoryError" in crashed["message"]
    status = next_drift_status({"consecutiveDetections": 1}, crashed, "j", None)
    assert status["consecutiveDetections"] == 1 and "drift check failed" in status["message"]


def drift(times=1):
    return {"result": "Drift", "consecutiveDetections": times}


@pytest.mark.parametrize(
    ("policy", "detected", "retrain", "in_flight", "go", "says"),
    [
        ({}, drift(), {}, 0, True, "retraining"),
        ({"enabled": False}, drift(), {}, 0, False, "disabled"),
        ({"requireConsecutiveDetections": 3}, drift(2), {}, 0, False, "needs 3"),
        ({"requireConsecutiveDetections": 3}, drift(3), {}, 0, True, "3 time(s)"),
        ({"maxInFlight": 1}, drift(), {}, 1, False, "maxInFlight"),
        ({"cooldown": "1h"}, drift(), {"lastTime": "2026-11-23T11:30:00Z"}, 0, False, "cooldown"),
        ({"cooldown": "1h"}, drift(), {"lastTime": "2026-11-23T10:59:00Z"}, 0, True, "retraining"),
        ({}, {"result": "NoDrift"}, {}, 0, False, "nothing to do"),
    ],
)
def test_retrain_policy(policy, detected, retrain, in_flight, go, says):
    decision = decide_retrain(Retrain.model_validate(policy), detected, retrain, in_flight, NOW)
    assert decision.retrain is go and says in decision.reason


def test_cooldown_says_how_long_is_left():
    last = (NOW - timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    decision = decide_retrain(Retrain(cooldown="1h"), drift(), {"lastTime": last}, 0, NOW)
    assert "600s more" in decision.reason
