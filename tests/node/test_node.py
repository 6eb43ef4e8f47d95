"""The real node works: pods from imported images run in containers on node-0.

    FLYWHEEL_E2E=1 .venv/bin/pytest tests/node/test_node.py -v -s

Skipped unless FLYWHEEL_E2E=1 (`make test` needs no node; this needs root and
a few minutes). Nothing here is faked: containerd, runc, the CNI bridge, the
kubelet and kube-proxy of tests/node/node.py run flywheel.local/busybox:1. The
node is brought up by the module fixture and taken down after, unless it was
already up (then it stays, e.g. for `make node-up` users). Timings go to
stdout (-s) and .cache/node/timings.json.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

pytestmark = pytest.mark.skipif(
    os.environ.get("FLYWHEEL_E2E") != "1", reason="the real node runs only with FLYWHEEL_E2E=1"
)

IMAGE = "flywheel.local/busybox:1"
TIMINGS: dict[str, float] = {}
# An HTTP server whose page names the pod that serves it.
HTTPD = (
    "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -v -p 8080 -h /tmp/www"
)


@pytest.fixture(scope="module")
def node():
    import node as nodes

    if os.geteuid() != 0:
        pytest.skip("the real node needs root")
    n = nodes.Node()
    ours = not n.is_running()
    t0 = time.monotonic()
    n.up()
    TIMINGS["node_up_s"] = round(time.monotonic() - t0, 1)
    yield n
    path = n.dir / "timings.json"
    path.write_text(json.dumps(TIMINGS, indent=2) + "\n")
    print(f"\ntimings: {TIMINGS} ({path})")
    if ours:
        n.down()


@pytest.fixture
def ns(node):
    name = f"node-{secrets.token_hex(3)}"
    node.kubectl("create", "namespace", name)
    yield name
    node.kubectl("delete", "namespace", name, "--wait=false")


def apply(node, ns: str, *objects: dict) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    node.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(doc))


def get(node, ns: str, kind: str, name: str) -> dict:
    return json.loads(node.kubectl("-n", ns, "get", kind, name, "-o", "json").stdout)


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def pod(name: str, command: str, labels: dict | None = None, restart: str = "Always") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"restartPolicy": restart, "containers": [web_container(command)]},
    }


def web_container(command: str) -> dict:
    return {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", command],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    }


def ready(obj: dict) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_pod_runs_on_the_real_node_and_its_service_answers(node, ns):
    t0 = time.monotonic()
    apply(node, ns, pod("web", HTTPD))
    wait_for("pod web Ready", lambda: ready(get(node, ns, "pod", "web")))
    web = get(node, ns, "pod", "web")
    TIMINGS["pod_ready_s"] = round(time.monotonic() - t0, 1)
    assert web["spec"]["nodeName"] == "node-0"
    assert web["status"]["podIP"].startswith("10.244.0.")
    container_id = web["status"]["containerStatuses"][0]["containerID"]
    assert container_id.startswith("containerd://")

    node.kubectl("-n", ns, "expose", "pod", "web", "--port=80", "--target-port=8080")
    ip = get(node, ns, "service", "web")["spec"]["clusterIP"]
    # From the host, through kube-proxy's DNAT.
    assert (
        wait_for(f"http://{ip}/ from the host", lambda: _try(http_get, f"http://{ip}/")) == "web\n"
    )

    # From another pod, by ClusterIP. (Debian's static busybox wget crashes
    # resolving a service name without libnss in the image; nc speaks plain TCP.)
    request = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {ip} 80'
    client = pod("client", request, restart="Never")
    client["spec"]["containers"][0].pop("readinessProbe")  # it serves nothing
    apply(node, ns, client)
    wait_for("pod client Succeeded", lambda: _phase(node, ns, "client") == "Succeeded")
    # kubectl logs: the apiserver reaches the kubelet with its client certificate.
    answer = node.kubectl("-n", ns, "logs", "client").stdout
    assert "200 OK" in answer and answer.rstrip().endswith("web")
    logs = node.kubectl("-n", ns, "logs", "web").stdout
    assert "response:200" in logs  # httpd -v logged the requests it served

    # kubectl exec, the other kubelet streaming path; and the `kubernetes`
    # Service leads from a pod to the apiserver (the operator's way in).
    probe = "nc -w 3 $KUBERNETES_SERVICE_HOST 443 </dev/null && echo api-reachable"
    out = node.kubectl("-n", ns, "exec", "web", "--", "sh", "-c", probe)
    assert "api-reachable" in out.stdout


def test_a_deployment_rolls_to_a_new_template(node, ns):
    labels = {"app": "roll"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "roll"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [web_container(HTTPD)], "terminationGracePeriodSeconds": 1},
            },
        },
    }
    apply(node, ns, deployment)
    node.kubectl("-n", ns, "rollout", "status", "deployment/roll", "--timeout=120s")
    first = _pod_names(node, ns, "app=roll")
    t0 = time.monotonic()
    node.kubectl("-n", ns, "set", "env", "deployment/roll", "GENERATION=2")
    node.kubectl("-n", ns, "rollout", "status", "deployment/roll", "--timeout=180s")
    TIMINGS["rollout_2_pods_s"] = round(time.monotonic() - t0, 1)
    wait_for("old pods gone", lambda: not (first & _pod_names(node, ns, "app=roll")))
    pods = json.loads(node.kubectl("-n", ns, "get", "pods", "-l", "app=roll", "-o", "json").stdout)
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2 and all(ready(p) for p in live)
    for p in live:
        env = p["spec"]["containers"][0].get("env", [])
        assert {"name": "GENERATION", "value": "2"} in env


def test_a_job_that_exits_3_reports_exit_code_3(node, ns):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "exit3"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE,
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", "echo failing on purpose; exit 3"]}],
                }
            },
        },
    }  # fmt: skip
    apply(node, ns, job)
    wait_for("job exit3 Failed", lambda: _job_failed(node, ns, "exit3"))
    pods = json.loads(
        node.kubectl("-n", ns, "get", "pods", "-l", "job-name=exit3", "-o", "json").stdout
    )
    (p,) = pods["items"]
    terminated = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert "failing on purpose" in node.kubectl("-n", ns, "logs", p["metadata"]["name"]).stdout


# --------------------------------------------------------------------- helpers


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:  # refused, unreachable, timed out
        return None


def _phase(node, ns: str, name: str) -> str:
    return get(node, ns, "pod", name).get("status", {}).get("phase", "")


def _pod_names(node, ns: str, selector: str) -> set[str]:
    out = node.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "name").stdout
    return set(out.split())


def _job_failed(node, ns: str, name: str) -> bool:
    conditions = get(node, ns, "job", name).get("status", {}).get("conditions", [])
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)
