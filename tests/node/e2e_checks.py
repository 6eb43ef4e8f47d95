"""What the e2e asserts about the cluster after the loop, one function per claim.

Each returns what it found (for the report) or raises AssertionError saying
what was expected, what was there, and where to look.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

GROUP, VERSION = "mlops.flywheel.dev", "v1alpha1"
# Every kind of workload the loop starts, by its app.kubernetes.io/component label.
WORKLOADS = {"dataset-snapshot", "training", "model-server", "drift-check"}
SPECIES = {"setosa", "versicolor", "virginica"}


def wait_until(probe: Callable[[], Any], timeout: float, what: str, look: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; look at: {look}"
            )
        time.sleep(2)


# ------------------------------------------------------------ Pod Security


def privileged_pod(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-probe"},
        "spec": {
            "containers": [{"name": "c", "image": image, "securityContext": {"privileged": True}}]
        },
    }


def enforces_restricted(core: client.CoreV1Api, namespace: str, image: str) -> str:
    """The namespace is labelled `restricted` and the API server acts on it: a
    privileged pod is refused (dry run: nothing is created either way)."""
    labels = core.read_namespace(namespace).metadata.labels or {}
    enforce = labels.get("pod-security.kubernetes.io/enforce")
    assert enforce == "restricted", f"namespace {namespace}: enforce label is {enforce!r}"
    try:
        core.create_namespaced_pod(namespace, privileged_pod(image), dry_run="All")
    except ApiException as err:
        message = json.loads(err.body or "{}").get("message", str(err))
        assert err.status == 403 and 'violates PodSecurity "restricted' in message, message
        return message
    raise AssertionError(f"namespace {namespace} admitted a privileged pod: PodSecurity is off")


# ------------------------------------------------------------- real pods


def pods_ran_in_containers(
    core: client.CoreV1Api, namespace: str, image: str, node: str
) -> dict[str, int]:
    """Every pod of the loop ran from our image in containerd on the node, and
    every kind of workload ran: {component: pods}."""
    seen: dict[str, int] = {}
    for pod in core.list_namespaced_pod(namespace).items:
        name = pod.metadata.name
        component = (pod.metadata.labels or {}).get("app.kubernetes.io/component", "?")
        assert pod.spec.node_name == node, f"pod {name} ran on {pod.spec.node_name}, not {node}"
        for status in pod.status.container_statuses or []:
            if not status.container_id:  # not started (yet): nothing to prove
                continue
            assert status.container_id.startswith("containerd://"), (name, status.container_id)
            assert status.image.endswith(image.split("/", 1)[-1]), (name, status.image, image)
        seen[component] = seen.get(component, 0) + 1
    missing = WORKLOADS - set(seen)
    assert not missing, f"no pods of {sorted(missing)} in {namespace}; pods by component: {seen}"
    return seen


# ---------------------------------------------------- models and registry


def model_versions(custom: client.CustomObjectsApi, namespace: str) -> dict[str, dict]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions")
    return {mv["metadata"]["name"]: mv for mv in items["items"]}


def promoted_model(
    custom: client.CustomObjectsApi, namespace: str, first: str, promoted: str, tracking_uri: str
) -> dict[str, Any]:
    """Both ModelVersions are registered; the promoted one carries the
    `production` alias, in its status and in MLflow's registry itself."""
    versions = model_versions(custom, namespace)
    assert {first, promoted} <= set(versions), f"ModelVersions in {namespace}: {sorted(versions)}"
    for name in (first, promoted):
        status = versions[name].get("status") or {}
        assert status.get("registryVersion"), f"ModelVersion {name} not registered: {status}"
    model = versions[promoted]["spec"]["modelName"]
    status = versions[promoted]["status"]

    def alias_moved() -> bool:
        current = model_versions(custom, namespace)[promoted].get("status") or {}
        return "production" in (current.get("aliases") or [])

    look = f"kubectl -n {namespace} describe modelversion {promoted}"
    wait_until(alias_moved, 120, f"ModelVersion {promoted} to show alias production", look)
    import mlflow

    registry = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    production = registry.get_model_version_by_alias(model, "production")
    assert production.version == str(status["registryVersion"]), (
        f"MLflow's production alias of {model} is on version {production.version}, "
        f"but {promoted} is version {status['registryVersion']}"
    )
    return {"model": model, "production": production.version, "run": production.run_id}


# -------------------------------------------------------------- the Service


def v2_request(rows: list[list[float]]) -> bytes:
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    inputs = [
        {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
        for i, c in enumerate(columns)
    ]
    return json.dumps({"inputs": inputs}).encode()


def ask(url: str, body: bytes) -> dict[str, Any] | None:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def service_serves(
    core: client.CoreV1Api,
    namespace: str,
    service: str,
    model_version: str,
    model: str,
    timeout: float = 600,
) -> dict[str, Any]:
    """The Service (through its ClusterIP) answers predictions, and only from
    `model_version` once the promotion's rollout is over: 20 answers in a row.
    The rollout replaces the stable pods one by one, and a model server on this
    small shared machine takes minutes to load its model: hence the time limit."""
    spec = core.read_namespaced_service(service, namespace).spec
    port = next(p.port for p in spec.ports if p.name == "http")
    url = f"http://{spec.cluster_ip}:{port}/v2/models/{model}/infer"
    body = v2_request([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    answers: list[dict | None] = []

    def twenty_from_promoted() -> bool:
        answer = ask(url, body)
        answers.append(answer)
        recent = answers[-20:]
        return len(recent) == 20 and all(
            a and a.get("model_version") == model_version for a in recent
        )

    look = f"kubectl -n {namespace} get pods,endpointslices; last answer: see the assertion"
    deadline = time.monotonic() + timeout
    while not twenty_from_promoted():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{url} did not answer 20 times in a row from {model_version} within "
                f"{timeout:.0f}s; "
                f"last answers: {answers[-3:]}; look at: {look}"
            )
        time.sleep(0.2)
    last = answers[-1] or {}
    predicted = set(last["outputs"][0]["data"])
    assert predicted <= SPECIES, f"predictions {predicted} are not iris species"
    return {"url": url, "model_version": last["model_version"], "predicted": sorted(predicted)}


# ----------------------------------------------------------- drift report


def drift_report_stored(s3, report_uri: str) -> int:
    """The drift check's report is an object in the store; returns its size."""
    assert report_uri and report_uri.startswith("s3://"), f"drift reportUri: {report_uri!r}"
    bucket, _, key = report_uri[len("s3://") :].partition("/")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] > 0, f"{report_uri} is empty"
    return head["ContentLength"]


# ---------------------------------------------------- a training that fails

FAILING_SCRIPT = "echo 'reading features'; echo 'no column petal_area' >&2; exit 3"


def failing_training_run(image: str) -> dict[str, Any]:
    """Own-image training whose container exits 3, as a broken user image would."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {"name": "exits-3"},
        "spec": {
            "datasetRef": {"name": "iris"},
            "container": {"image": image, "command": ["sh", "-c", FAILING_SCRIPT]},
            "backoffLimit": 0,
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        },
    }


def failure_reported(custom: client.CustomObjectsApi, namespace: str, image: str) -> dict:
    """A TrainingRun whose container exits non-zero ends Failed with the exit
    code, the kubelet's reason and the log tail on its status."""
    run = failing_training_run(image)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", run)
    name = run["metadata"]["name"]

    def finished() -> dict | None:
        status = (
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingruns", name
            ).get("status")
            or {}
        )
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    look = f"kubectl -n {namespace} describe trainingrun {name}; kubectl -n {namespace} get pods"
    status = wait_until(finished, 300, f"TrainingRun {name} to fail", look)
    failure = status.get("failure") or {}
    ready = next(c for c in status.get("conditions", []) if c["type"] == "Ready")
    assert status["phase"] == "Failed", status
    assert (failure.get("reason"), failure.get("exitCode")) == ("Error", 3), failure
    assert "no column petal_area" in (failure.get("logTail") or ""), failure
    assert ready["status"] == "False" and "exit code 3" in ready["message"], ready
    return {"reason": failure["reason"], "exitCode": 3, "ready": ready["message"]}
