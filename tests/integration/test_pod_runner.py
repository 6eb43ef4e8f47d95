"""Pods bound to `runner-0` really run, and report back as they would in a cluster.

Each test creates what the operator would create (a Job, Pod or Deployment
meeting Pod Security "restricted", in a namespace that enforces it) and checks
what a user would read back with kubectl: phases, exit codes, termination
messages, Job counts, readiness, restarts, EndpointSlices; and servers answer
HTTP on their pod IPs. Nothing here fakes a pod's result; the processes produce
them.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import secrets
import socket
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


def create_deployment(apps: client.AppsV1Api, namespace: str, name: str, replicas: int, spec):
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }
    return apps.create_namespaced_deployment(namespace, body)


def create_service(core: client.CoreV1Api, namespace: str, name: str):
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return core.create_namespaced_service(namespace, body)


def app_pods(core: client.CoreV1Api, namespace: str, app: str) -> list:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return sorted(pods, key=lambda pod: pod.metadata.name)


def condition(obj, kind: str) -> str | None:
    """The status ("True", "False") of a pod's or Deployment's condition `kind`."""
    found = [c for c in obj.status.conditions or [] if c.type == kind]
    return found[0].status if found else None


def is_ready(pod: client.V1Pod) -> bool:
    return condition(pod, "Ready") == "True"


def ready_endpoints(discovery: client.DiscoveryV1Api, namespace: str, service: str) -> set[str]:
    """The addresses a Service's EndpointSlices list as ready: how clients find pods."""
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    return {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.conditions.ready
        for address in endpoint.addresses
    }


def fetch(ip: str, path: str = "/") -> tuple[int, dict]:
    """GET http://ip:8080/path from this process (no proxy), as a client of the pod would."""
    conn = http.client.HTTPConnection(ip, 8080, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def in_pod_network(ip: str) -> bool:
    networks = (podrunner.POD_NETWORK, podrunner.LOOPBACK_NETWORK)
    return any(ipaddress.ip_address(ip) in ipaddress.ip_network(f"{n}.0.0/16") for n in networks)


def endpoints_listed(ip: str) -> bool:
    """False when the runner could not route its pod network and fell back to
    loopback pod IPs, which the apiserver refuses in EndpointSlices."""
    return not ipaddress.ip_address(ip).is_loopback


def http_probe(path: str, port: int | str = "http", **fields) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 1, **fields}


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
    "bind": os.environ["FLYWHEEL_BIND_ADDRESS"],
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
    assert (report["pod"], report["namespace"]) == ("env", namespace)
    # The pod's own address, which is also the one it is told to listen on.
    assert report["ip"] == report["bind"] == pod.status.pod_ip != podrunner.HOST_IP
    assert in_pod_network(report["ip"])
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


# A model server stand-in: listens on the pod's address only (FLYWHEEL_BIND_ADDRESS,
# as the real one does), answers /ready with 503 for its first argv[1] seconds and
# /live with 500 after argv[2] seconds, and stops cleanly on SIGTERM.
SERVER = """
import http.server, json, os, signal, sys, time
born = time.monotonic()
ready_after, live_for = float(sys.argv[1]), float(sys.argv[2])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        age = time.monotonic() - born
        code = {"/ready": 200 if age >= ready_after else 503,
                "/live": 200 if age < live_for else 500}.get(self.path, 200)
        body = json.dumps({"pod": os.environ["HOSTNAME"], "pid": os.getpid()}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

def stop(*_):
    print("SIGTERM: shutting down", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
server = http.server.ThreadingHTTPServer((os.environ["FLYWHEEL_BIND_ADDRESS"], 8080), Handler)
print(f"pid={os.getpid()} listening on {server.server_address}", flush=True)
server.serve_forever()
"""
READY_AFTER = 5


def server(ready_after: float = 0, live_for: float = float("inf"), **fields) -> dict:
    ports = [{"name": "http", "containerPort": 8080}]
    return python(SERVER, str(ready_after), str(live_for), ports=ports, **fields)


def test_a_deployment_is_available_once_readiness_passes_and_each_pod_serves_on_its_ip(
    kube_api, namespace
):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    discovery = client.DiscoveryV1Api(kube_api)
    container = server(
        READY_AFTER,
        readinessProbe=http_probe("/ready"),
        livenessProbe=http_probe("/live", port=8080, periodSeconds=2),
    )
    create_deployment(apps, namespace, "web", 2, pod_spec(container, "Always"))
    create_service(core, namespace, "web")

    def listening():
        pods = app_pods(core, namespace, "web")
        up = [pod for pod in pods if "listening" in podrunner.pod_logs(pod)]
        return pods if len(pods) == len(up) == 2 else None

    # Serving, but not ready: the readiness probe still gets 503.
    pods = wait_for(listening, 60, what="both servers to listen")
    for pod in pods:
        status = pod.status.container_statuses[0]
        assert status.state.running and not status.ready, status
        assert condition(pod, "Ready") == "False"
        assert fetch(pod.status.pod_ip, "/ready")[0] == 503
    deployment = apps.read_namespaced_deployment_status("web", namespace)
    assert not deployment.status.available_replicas
    assert condition(deployment, "Available") != "True"
    assert ready_endpoints(discovery, namespace, "web") == set()

    def all_ready():
        pods = app_pods(core, namespace, "web")
        return pods if len(pods) == 2 and all(map(is_ready, pods)) else None

    pods = wait_for(all_ready, 30, what="both pods to be Ready")
    for pod in pods:
        started = pod.status.container_statuses[0].state.running.started_at
        [ready] = [c for c in pod.status.conditions if c.type == "Ready"]
        # Not before the server said so (timestamps have whole seconds).
        assert (ready.last_transition_time - started).total_seconds() >= READY_AFTER - 1
        assert pod.status.container_statuses[0].restart_count == 0
    wait_for(
        lambda: (
            condition(apps.read_namespaced_deployment_status("web", namespace), "Available")
            == "True"
        ),
        30,
        what="the Deployment to be Available",
    )

    ips = [pod.status.pod_ip for pod in pods]
    assert len(set(ips)) == 2, ips
    for pod, ip in zip(pods, ips, strict=True):
        assert in_pod_network(ip), ip
        assert [entry.ip for entry in pod.status.pod_ips] == [ip]
        assert pod.status.host_ip == podrunner.HOST_IP
        # Each address reaches its own pod's process.
        assert fetch(ip) == (200, {"pod": pod.metadata.name, "pid": logged_pid(pod)})
    if not endpoints_listed(ips[0]):
        pytest.skip("the runner has loopback pod IPs (no CAP_NET_ADMIN): no EndpointSlices")
    wait_for(
        lambda: ready_endpoints(discovery, namespace, "web") == set(ips),
        30,
        what="the Service's EndpointSlices to list both pods",
    )


def rolled_out(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, name: str):
    """The Deployment's pods once the rollout is complete and all of them are Ready."""

    def probe():
        deployment = apps.read_namespaced_deployment_status(name, namespace)
        status, wanted = deployment.status, deployment.spec.replicas
        if (status.observed_generation or 0) < deployment.metadata.generation:
            return None
        counts = (status.replicas or 0, status.updated_replicas or 0, status.available_replicas)
        pods = app_pods(core, namespace, name)
        if counts != (wanted, wanted, wanted or None) or len(pods) != wanted:
            return None
        return pods if all(map(is_ready, pods)) else None

    return probe


def assert_stopped_gracefully(pods: list, pod_runner) -> None:
    for pod in pods:
        assert not alive(logged_pid(pod)), podrunner.pod_logs(pod)
        assert "SIGTERM: shutting down" in podrunner.pod_logs(pod)  # not SIGKILLed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((pod.status.pod_ip, 8080), timeout=2).close()
    if pod_runner.serving:  # the runner's own view: the addresses are free again
        uids = {pod.metadata.uid for pod in pods}
        wait_for(lambda: not uids & set(pod_runner.pod_ips()), 10, what="the pod IPs to be freed")


def test_rollouts_and_scale_down_stop_servers_gracefully_and_free_their_ips(
    kube_api, namespace, pod_runner
):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    discovery = client.DiscoveryV1Api(kube_api)
    container = server(readinessProbe=http_probe("/ready"))
    spec = pod_spec(container, "Always", terminationGracePeriodSeconds=10)
    create_deployment(apps, namespace, "api", 2, spec)
    create_service(core, namespace, "api")
    first = wait_for(rolled_out(apps, core, namespace, "api"), 60, what="the Deployment")

    # A rollout: new pods come up, the old ones are deleted, gracefully.
    env = [{"name": "MODEL_VERSION", "value": "2"}]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "env": env}]}}}}
    apps.patch_namespaced_deployment("api", namespace, patch)

    def replaced():
        pods = rolled_out(apps, core, namespace, "api")()
        old = {pod.metadata.uid for pod in first}
        return pods if pods and not old & {pod.metadata.uid for pod in pods} else None

    second = wait_for(replaced, 90, what="the rollout")
    assert_stopped_gracefully(first, pod_runner)
    second_ips = {pod.status.pod_ip for pod in second}
    assert len(second_ips) == 2 and not second_ips & {pod.status.pod_ip for pod in first}
    for pod in second:
        assert fetch(pod.status.pod_ip)[1]["pod"] == pod.metadata.name
    listed = endpoints_listed(second[0].status.pod_ip)
    if listed:
        wait_for(
            lambda: ready_endpoints(discovery, namespace, "api") == second_ips,
            30,
            what="the EndpointSlices to list the new pods",
        )

    apps.patch_namespaced_deployment_scale("api", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not app_pods(core, namespace, "api"), 40, what="the pods to be deleted")
    assert_stopped_gracefully(second, pod_runner)
    if listed:
        wait_for(
            lambda: not ready_endpoints(discovery, namespace, "api"),
            30,
            what="the EndpointSlices to be empty",
        )


def test_a_failing_liveness_probe_restarts_the_container(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    liveness = http_probe("/live", failureThreshold=2)
    container = server(live_for=3, livenessProbe=liveness)
    spec = pod_spec(container, "Always", terminationGracePeriodSeconds=5)
    create_pod(core, namespace, "wedged", spec)

    def restarted():
        pod = core.read_namespaced_pod("wedged", namespace)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].restart_count and statuses[0].state.running else None

    pod = wait_for(restarted, 60, what="the container to be restarted")
    status = pod.status.container_statuses[0]
    last = status.last_state.terminated
    # Killed with SIGTERM, on which the server exits 0; still a restart under Always.
    assert (last.exit_code, last.reason) == (0, "Completed"), podrunner.pod_logs(pod)
    assert (last.finished_at - last.started_at).total_seconds() >= 3  # lived until /live failed
    assert pod.status.phase == "Running"
    assert not alive(logged_pid(pod))  # the first instance's process
    logs = Path(pod.metadata.annotations[podrunner.LOG_ANNOTATION]) / "main"
    assert "SIGTERM: shutting down" in (logs / "0.log").read_text()
    restarted_log = logs / "1.log"
    wait_for(lambda: "listening" in restarted_log.read_text(), 20, what="the second instance")


SLOW_START = """
import os, socket, sys, time
print(f"pid={os.getpid()}", flush=True)
time.sleep(float(sys.argv[1]))
listener = socket.create_server((os.environ["FLYWHEEL_BIND_ADDRESS"], 8080))
print("listening", flush=True)
time.sleep(2)
open(os.path.join(os.environ["HOME"], "warm"), "w").close()
print("warm", flush=True)
time.sleep(600)
"""

# Run as kubelet runs an exec probe: in the container's environment (its HOME, the
# pod's env, the runner's variables).
WARM = """
import os, sys
warm = os.path.exists(os.path.join(os.environ["HOME"], "warm"))
sys.exit(0 if warm and os.environ["FLYWHEEL_BIND_ADDRESS"] == os.environ["POD_IP"] else 1)
"""


def test_startup_probes_gate_the_other_probes_and_restart_a_container_that_never_starts(
    kube_api, namespace
):
    core = client.CoreV1Api(kube_api)
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    ports = [{"name": "http", "containerPort": 8080}]

    def container(listen_after: int, failures: int) -> dict:
        startup = {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": failures}
        readiness = {"exec": {"command": ["python", "-c", WARM]}, "periodSeconds": 1}
        return python(
            SLOW_START,
            str(listen_after),
            env=env,
            ports=ports,
            startupProbe=startup,
            readinessProbe=readiness,
        )

    spec = {"restartPolicy": "Always", "terminationGracePeriodSeconds": 3}
    create_pod(core, namespace, "slow", pod_spec(container(3, 10), **spec))
    create_pod(core, namespace, "deaf", pod_spec(container(600, 2), **spec))

    def status(name: str):
        pod = core.read_namespaced_pod(name, namespace)
        return pod, (pod.status.container_statuses or [None])[0]

    def running(name: str):
        pod, found = status(name)
        return pod if found and found.state.running and "pid=" in podrunner.pod_logs(pod) else None

    pod = wait_for(lambda: running("slow"), 30, what="the slow server to run")
    _, found = status("slow")
    assert (found.started, found.ready) == (False, False), found

    pod = wait_for(lambda: status("slow")[1].started and status("slow")[0], 30, what="startup")
    assert "listening" in podrunner.pod_logs(pod)
    pod = wait_for(lambda: is_ready(status("slow")[0]) and status("slow")[0], 30, what="ready")
    assert "warm" in podrunner.pod_logs(pod)
    assert pod.status.container_statuses[0].restart_count == 0

    def restarted():
        pod, found = status("deaf")
        return pod if found and found.restart_count else None

    pod = wait_for(restarted, 60, what="the server that never listens to be restarted")
    found = pod.status.container_statuses[0]
    assert not found.started and not found.ready and not is_ready(pod)
    assert (found.last_state.terminated.exit_code, found.last_state.terminated.reason) == (
        143,
        "Error",
    )  # SIGTERM
    assert "listening" not in podrunner.pod_logs(pod)


def test_pod_ips_are_handed_out_round_robin_and_reused_once_freed():
    pool = podrunner.AddressPool("198.18", size=3)
    first, second = pool.acquire("a"), pool.acquire("b")
    assert (first, second) == ("198.18.0.1", "198.18.0.2")
    assert pool.acquire("a") == first  # one address per pod
    pool.release("a")
    assert pool.acquire("c") == "198.18.0.3"  # not the address just freed
    assert pool.acquire("d") == first  # then it is reused
    with pytest.raises(RuntimeError):
        pool.acquire("e")
    assert podrunner.AddressPool("198.18").address(254) == "198.18.1.1"


def test_pod_ips_are_addresses_of_this_machine(pod_runner):
    if not pod_runner.serving:
        pytest.skip("node runner-0 is served by a runner outside this session")
    network = ipaddress.ip_network(pod_runner.pod_network)
    assert not network.is_global  # never someone else's addresses
    for host in (network[1], network[-2]):
        with socket.create_server((str(host), 0)) as listener:  # any address binds
            socket.create_connection(listener.getsockname(), timeout=2).close()


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
