"""When a Dataset is snapshotted, and what a finished Job means (table-driven)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.policy.snapshots import plan_snapshot, read_outcome

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RUNNING = {"sequence": 3, "jobName": "iris-snapshot-3", "generation": 2, "state": "Running"}
DONE = {**RUNNING, "state": "Succeeded", "finishTime": "2026-11-23T11:00:00Z"}
FAILED = {**RUNNING, "state": "Failed", "finishTime": "2026-11-23T11:58:00Z"}
COMPLETE_JOB = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
ACTIVE_JOB = {"status": {"active": 1}}
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("attempt", "generation", "job", "last", "refresh", "now", "action", "sequence"),
    [
        (None, 1, None, None, None, NOW, "start", 1),
        (RUNNING, 2, ACTIVE_JOB, None, None, NOW, "wait", 3),
        (RUNNING, 2, COMPLETE_JOB, None, None, NOW, "collect", 3),
        (RUNNING, 2, None, None, None, NOW, "start", 4),  # Job deleted under us
        (DONE, 2, None, NOW - timedelta(minutes=5), HOUR, NOW, "idle", 3),
        (DONE, 2, None, NOW - 2 * HOUR, HOUR, NOW, "start", 4),  # refresh due
        (DONE, 2, None, NOW - 2 * HOUR, None, NOW, "idle", 3),  # no refresh asked
        (DONE, 3, None, NOW, None, NOW, "start", 4),  # spec changed
        (FAILED, 2, None, None, None, NOW, "idle", 3),  # failed 2 min ago: wait
        (FAILED, 2, None, None, None, NOW + timedelta(minutes=4), "start", 4),  # retry
    ],
)
def test_plan(attempt, generation, job, last, refresh, now, action, sequence):
    plan = plan_snapshot(attempt, generation, job, last, refresh, now)
    assert (plan.action, plan.sequence) == (action, sequence), plan.why


def pod(message=None, exit_code=0, created="2026-11-23T11:00:00Z"):
    terminated = {"exitCode": exit_code, **({"message": message} if message else {})}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def test_outcome_from_the_newest_pods_termination_message():
    old = pod(json.dumps({"ok": False, "error": {"reason": "SourceUnreachable"}}), 10)
    new = pod(json.dumps({"ok": True, "version": "ab" * 32}), 0, "2026-11-23T11:05:00Z")
    outcome = read_outcome(COMPLETE_JOB, [new, old])
    assert outcome.ok and outcome.result["version"] == "ab" * 32


def test_outcome_names_the_workloads_reason():
    message = json.dumps({"ok": False, "error": {"reason": "AccessDenied", "message": "403"}})
    outcome = read_outcome({"status": {}}, [pod(message, 11)])
    assert (outcome.ok, outcome.reason, outcome.message) == (False, "AccessDenied", "403")


def test_outcome_without_a_result_uses_the_job_reason_and_log_tail():
    job = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
        }
    }
    outcome = read_outcome(job, [pod("Traceback ...\nMemoryError", 137)])
    assert outcome.reason == "DeadlineExceeded"
    assert "exit code 137" in outcome.message and "MemoryError" in outcome.message
