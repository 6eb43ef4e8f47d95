"""Pods that wait for a person: a missing image or Secret is named, not waited on silently."""

from __future__ import annotations

import pytest

from flywheel.policy.jobs import stuck_pod


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
