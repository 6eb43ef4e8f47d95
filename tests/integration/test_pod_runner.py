"""Pods bound to `runner-0` really run, and report back as they would in a cluster.

Each test creates what the operator would create (a Job or Pod meeting Pod
Security "restricted", in a namespace that enforces it) and checks what a user
would read back with kubectl: phases, exit codes, termination messages, Job
counts. Nothing here fakes a pod's result; the processes produce them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from pathlib import Path

import podrunner
import pytest
from kube_helpers import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

IMAGE = "ghcr.io/example/flywheel:0.1.0"  # served by the image map entry `flywheel`
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}

pytestmark = pytest.mark.usefixtures("pod_runner")


def python(code: str, *args: str, **fields) -> dict:
    """A restricted container running `python -c code args...` in the flywheel image."""
    return {
        "name": "main",
        "image": IMAGE,
        "command": ["python", "-c", code],
        "args": list(args),
        "securityContext": CONTAINER_SECURITY,
        **fields,
    }


def pod_spec(container: dict, restart_policy: str = "Never", **fields) -> dict:
    return {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [container],
        **fields,
    }


def create_job(batch: client.BatchV1Api, namespace: str, name: str, spec: dict, backoff=0):
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": {"spec": spec}},
    }
    return batch.create_namespaced_job(namespace, body)


def create_pod(core: client.CoreV1Api, namespace: str, name: str, spec: dict):
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    return core.create_namespaced_pod(namespace, body)


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)


def job_finished(batch: client.BatchV1Api, namespace: str, name: str):
    """The Job's status once it has a Complete or Failed condition."""

    def probe():
        status = batch.read_namespaced_job_status(name, namespace).status
        done = {c.type for c in status.conditions or [] if c.status == "True"}
        return status if done & {"Complete", "Failed"} else None

    return probe


def pod_in_phase(core: client.CoreV1Api, namespace: str, name: str, *phases: str):
    def probe():
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in phases else None

    return probe


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    state = pod.status.container_statuses[0].state
    assert state.terminated, f"container not terminated: {state}\n{podrunner.pod_logs(pod)}"
    return state.terminated


def logged_pid(pod: client.V1Pod) -> int:
    """The pid a container printed first (`pid=N`), from the runner's log files."""
    found = re.search(r"pid=(\d+)", podrunner.pod_logs(pod))
    assert found, podrunner.pod_logs(pod)
    return int(found[1])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# --------------------------------------------------------------------- tests

WRITE_RESULT = """
import json
result = {"ok": True, "rows": 150, "version": "sha256:0f3a"}
with open("/dev/termination-log", "w") as log:
    log.write(json.dumps(result, sort_keys=True))
print("snapshot done")
"""


def test_a_job_reports_its_result_in_the_termination_message(kube_api, namespace):
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    create_job(batch, namespace, "snapshot", pod_spec(python(WRITE_RESULT)))

    status = wait_for(job_finished(batch, namespace, "snapshot"), 60, what="the Job to finish")
    [pod] = job_pods(core, namespace, "snapshot")
    assert status.succeeded == 1, f"{status}\n{podrunner.pod_logs(pod)}"
    assert pod.spec.node_name == podrunner.NODE_NAME
    assert pod.status.phase == "Succeeded"
    result = terminated(pod)
    assert (result.exit_code, result.reason) == (0, "Completed")
    expected = {"ok": True, "rows": 150, "version": "sha256:0f3a"}
    assert result.message == json.dumps(expected, sort_keys=True)
    assert result.started_at <= result.finished_at


FAIL = """
import sys
print("reading s3://data/iris.csv")
print("ValueError: column 'target' is missing", file=sys.stderr)
sys.exit(3)
"""


def test_a_failing_job_reports_its_log_tail_and_retries_up_to_its_backoff_limit(
    kube_api, namespace
):
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    container = python(FAIL, terminationMessagePolicy="FallbackToLogsOnError")
    create_job(batch, namespace, "train", pod_spec(container), backoff=1)

    # The Job controller waits ~10 s before the second attempt.
    status = wait_for(job_finished(batch, namespace, "train"), 90, what="the Job to fail")
    failed = [c for c in status.conditions if c.type == "Failed" and c.status == "True"]
    assert failed and failed[0].reason == "BackoffLimitExceeded", status
    assert status.failed == 2 and not status.succeeded
    pods = job_pods(core, namespace, "train")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        result = terminated(pod)
        assert (result.exit_code, result.reason) == (3, "Error")
        # stdout is block-buffered (not a terminal), so it lands after stderr, as in a pod.
        assert sorted(result.message.splitlines()) == [
            "ValueError: column 'target' is missing",
            "reading s3://data/iris.csv",
        ]


REPORT_ENV = """
import hashlib, json, os
report = {
    "token_sha256": hashlib.sha256(os.environ["TOKEN"].encode()).hexdigest(),
    "mode": os.environ["MODE"],
    "cfg": {k: v for k, v in os.environ.items() if k.startswith("CFG_")},
    "pod": os.environ["POD_NAME"], "namespace": os.environ["POD_NAMESPACE"],
    "ip": os.environ["POD_IP"],
    "leaked": sorted(k for k in ("KUBECONFIG", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST")
                     if k in os.environ),
}
with open(os.environ["FLYWHEEL_TERMINATION_LOG"], "w") as log:
    log.write(json.dumps(report))
"""


def test_env_from_secrets_config_maps_and_the_downward_api_reaches_the_process(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    token = secrets.token_hex(16)  # compared through its hash: never printed
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": token}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"mode": "fast", "seed": "7"}}
    )

    def field(path: str) -> dict:
        return {"fieldRef": {"fieldPath": path}}

    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
        {"name": "POD_IP", "valueFrom": field("status.podIP")},
    ]
    env_from = [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}]
    create_pod(core, namespace, "env", pod_spec(python(REPORT_ENV, env=env, envFrom=env_from)))

    pod = wait_for(pod_in_phase(core, namespace, "env", "Succeeded", "Failed"), 60)
    report = json.loads(terminated(pod).message or "{}")
    assert report["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert report["mode"] == "fast"
    assert report["cfg"] == {"CFG_mode": "fast", "CFG_seed": "7"}
    assert (report["pod"], report["namespace"], report["ip"]) == ("env", namespace, "127.0.0.1")
    assert report["leaked"] == [], "the runner's own environment leaked into the pod"


ECHO_ARGS = """
import json, sys
open("/dev/termination-log", "w").write(json.dumps(sys.argv[1:]))
"""


def test_var_references_in_args_expand_as_kubelet_expands_them(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "WHO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LINE", "value": "$(GREETING), $(WHO)"},
    ]
    args = ["$(GREETING)", "$$(GREETING)", "$(MISSING)", "$(LINE)!", "cost: $5"]
    create_pod(core, namespace, "expand", pod_spec(python(ECHO_ARGS, *args, env=env)))

    pod = wait_for(pod_in_phase(core, namespace, "expand", "Succeeded", "Failed"), 60)
    assert json.loads(terminated(pod).message) == [
        "hello",
        "$(GREETING)",
        "$(MISSING)",
        "hello, expand!",
        "cost: $5",
    ]


SLEEP = """
import os, time
print(f"pid={os.getpid()}", flush=True)
time.sleep(600)
"""


def test_active_deadline_kills_a_sleeping_container(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    create_pod(core, namespace, "sleeper", pod_spec(python(SLEEP), activeDeadlineSeconds=3))

    pod = wait_for(pod_in_phase(core, namespace, "sleeper", "Failed", "Succeeded"), 40)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    result = terminated(pod)
    assert result.exit_code == 143 and result.reason == "Error"  # SIGTERM
    assert (result.finished_at - pod.status.start_time).total_seconds() < 15
    assert not alive(logged_pid(pod))


def test_a_pod_with_an_unknown_image_never_runs(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    touch = "open('/tmp/should-not-exist', 'w')"
    cases = {
        "pulled": (python(touch, image="registry.example/team/trainer:1"), "ImagePullBackOff"),
        "never": (
            python(touch, image="busybox:1.36", imagePullPolicy="Never"),
            "ErrImageNeverPull",
        ),
    }
    for name, (container, _) in cases.items():
        create_pod(core, namespace, name, pod_spec(container))

    for name, (container, reason) in cases.items():

        def waiting_for_image(name=name, reason=reason):
            pod = core.read_namespaced_pod(name, namespace)
            statuses = pod.status.container_statuses or []
            waiting = statuses[0].state.waiting if statuses else None
            return pod if waiting and waiting.reason == reason else None

        pod = wait_for(waiting_for_image, 30, what=f"pod {name} to wait with {reason}")
        assert container["image"] in pod.status.container_statuses[0].state.waiting.message
        time.sleep(1)  # and it stays so: nothing ran
        pod = core.read_namespaced_pod(name, namespace)
        assert pod.status.phase == "Pending"
        assert pod.status.container_statuses[0].state.waiting.reason == reason
        assert not pod.status.container_statuses[0].started
        assert not pod.status.container_statuses[0].container_id
        assert podrunner.pod_logs(pod) == "(empty)"


RETRY_ONCE = """
import json, os, sys
from pathlib import Path
scratch = Path(json.loads(os.environ["FLYWHEEL_VOLUME_MOUNTS"])["/scratch"])
marker = scratch / "attempted"
if not marker.exists():
    marker.touch()
    sys.exit(1)
open("/dev/termination-log", "w").write('{"attempt": 2}')
"""


def test_on_failure_restarts_the_container_in_place(kube_api, namespace):
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    container = python(RETRY_ONCE, volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])
    spec = pod_spec(container, "OnFailure", volumes=[{"name": "scratch", "emptyDir": {}}])
    create_job(batch, namespace, "retry", spec, backoff=3)

    status = wait_for(job_finished(batch, namespace, "retry"), 60, what="the Job to finish")
    [pod] = job_pods(core, namespace, "retry")
    assert status.succeeded == 1, f"{status}\n{podrunner.pod_logs(pod)}"
    container_status = pod.status.container_statuses[0]
    assert container_status.restart_count == 1
    assert container_status.last_state.terminated.exit_code == 1
    assert terminated(pod).message == '{"attempt": 2}'


def test_deleting_a_running_pod_stops_its_process(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    create_pod(core, namespace, "doomed", pod_spec(python(SLEEP)))

    def printed_pid():
        pod = core.read_namespaced_pod("doomed", namespace)
        running = pod.status.phase == "Running"
        return pod if running and "pid=" in podrunner.pod_logs(pod) else None

    pid = logged_pid(wait_for(printed_pid, 30, what="the container to start"))
    assert alive(pid)
    core.delete_namespaced_pod("doomed", namespace, grace_period_seconds=5)

    def gone():
        try:
            core.read_namespaced_pod("doomed", namespace)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, 20, what="the pod to be deleted")
    assert not alive(pid)


def test_the_runner_node_stays_ready(kube_api):
    core = client.CoreV1Api(kube_api)
    leases = client.CoordinationV1Api(kube_api)
    renewals = set()
    heartbeats = set()
    end = time.monotonic() + 65  # beyond the node monitor grace period (40-50 s)
    while time.monotonic() < end:
        node = core.read_node(podrunner.NODE_NAME)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", ready
        taints = [t.key for t in node.spec.taints or []]
        assert not [t for t in taints if t.startswith("node.kubernetes.io/")], taints
        heartbeats.add(ready.last_heartbeat_time)
        lease = leases.read_namespaced_lease(podrunner.NODE_NAME, "kube-node-lease")
        renewals.add(lease.spec.renew_time)
        time.sleep(5)
    assert len(renewals) >= 5, sorted(renewals)
    assert len(heartbeats) >= 5, sorted(heartbeats)
    assert node.metadata.labels[podrunner.RUNNER_LABEL] == "true"
    assert node.status.allocatable == {**podrunner.NODE_RESOURCES}
