"""Pods that wait for a person: a missing image or Secret is named, not waited on silently."""

from __future__ import annotations

import json

import pytest

from flywheel.policy.jobs import failed_attempt, stuck_pod


def pod(reason=None, message=None, init=False):
    waiting = {"reason": reason, "message": message} if reason else None
    status = {"name": "train", "state": {"waiting": waiting} if waiting else {"running": {}}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "run-abc"}, "status": {key: [status]}}


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("ImagePullBackOff", "check the image name and its pull secret"),
        ("ErrImageNeverPull", "imagePullPolicy is Never"),
        (
            "CreateContainerConfigError",
            "a Secret or ConfigMap (or a key) the pod refers to is missing",
        ),
        ("CrashLoopBackOff", "keeps crashing"),
    ],
)
def test_stuck_states_are_named_with_the_fix(reason, says):
    found = stuck_pod([pod(reason, 'secret "s3-keys" not found')])
    assert found[0] == reason
    assert found[1].startswith("pod run-abc: container train: ") and says in found[1]
    assert found[1].endswith('(secret "s3-keys" not found)')


def test_pods_on_their_way_are_not_stuck():
    assert stuck_pod([pod()]) is None
    assert stuck_pod([pod("ContainerCreating")]) is None
    assert stuck_pod([]) is None
    assert stuck_pod([pod("ErrImagePull", init=True)])[0] == "ErrImagePull"


SCHEDULER_SAYS = (
    "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated "
    "taint {dedicated: gpu}. preemption: 0/2 nodes are available: 2 No preemption victims "
    "found for incoming pod."
)


def pending(condition_status="False", reason="Unschedulable", message=SCHEDULER_SAYS):
    condition = {"type": "PodScheduled", "status": condition_status, "reason": reason}
    if message is not None:
        condition["message"] = message
    return {"metadata": {"name": "iris-stable-7d9f"}, "status": {"phase": "Pending",
            "conditions": [condition]}}  # fmt: skip


def test_a_pod_no_node_takes_is_named_with_the_schedulers_words_and_the_field():
    reason, message = stuck_pod([pending()], placement_field="spec.scheduling")
    assert reason == "Unschedulable"
    assert message == (
        f"pod iris-stable-7d9f cannot be scheduled: {SCHEDULER_SAYS} "
        "(spec.scheduling sets its nodeSelector and tolerations; "
        "or add nodes or capacity that fit it)"
    )


def test_an_unschedulable_pod_of_a_kind_without_placement_is_named_with_the_other_fix():
    reason, message = stuck_pod([pending(message=None)])
    assert (reason, message) == (
        "Unschedulable",
        "pod iris-stable-7d9f cannot be scheduled (add nodes or capacity that fit it)",
    )


def test_the_schedulers_long_explanation_is_cut_to_its_gist():
    _, message = stuck_pod([pending(message="0/500 nodes are available: " + "x" * 5000)])
    assert len(message) < 500 and message.startswith(
        "pod iris-stable-7d9f cannot be scheduled: 0/500"
    )


def test_pods_being_scheduled_or_scheduled_are_not_unschedulable():
    assert stuck_pod([pending(condition_status="True", reason=None)]) is None
    # Waiting for a scheduling gate is the gate owner's business, not a node's.
    assert stuck_pod([pending(reason="SchedulingGated")]) is None


def ended(created, phase, message=None):
    state = {"terminated": {"exitCode": 10, "message": message}} if message else {"running": {}}
    return {
        "metadata": {"name": f"pod-{created}", "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "snapshot", "state": state}]},
    }


def test_a_failed_attempt_is_named_while_the_next_runs():
    error = {
        "ok": False,
        "error": {"reason": "SourceUnreachable", "message": "cannot list s3://b/"},
    }
    pods = [ended("2026-01-01T00:00:00Z", "Failed", json.dumps(error)),
            ended("2026-01-01T00:00:30Z", "Running")]  # fmt: skip
    assert failed_attempt(pods) == ("SourceUnreachable", "attempt 1 failed: cannot list s3://b/")


def test_no_failed_attempt_without_the_workloads_report():
    assert failed_attempt([ended("2026-01-01T00:00:00Z", "Running")]) is None
    assert failed_attempt([ended("2026-01-01T00:00:00Z", "Failed", "Traceback ...")]) is None
    done = json.dumps({"ok": True, "version": "abc"})
    assert failed_attempt([ended("2026-01-01T00:00:00Z", "Succeeded", done)]) is None
